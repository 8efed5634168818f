/* launch.h: one process per rank on this machine (launch.c), for `loragen train --procs N` / `--gpus N`. */
#ifndef LG_CLI_LAUNCH_H
#define LG_CLI_LAUNCH_H

/* Runs `loragen ARGV...` (argv[0] is the verb) n times, rank r with RANK = LOCAL_RANK = r, WORLD_SIZE = n,
 * MASTER_ADDR = 127.0.0.1 (unless set), MASTER_PORT (unless set: a free port) and NCCL_NVLS_ENABLE=0, and
 * waits for them. The first rank to fail (a non-zero status or a signal) is named on stderr and the others
 * get SIGTERM, then SIGKILL after a grace period; SIGINT and SIGTERM sent to the launcher are passed on; a
 * rank whose launcher dies is killed (PR_SET_PDEATHSIG). Returns 0 when every rank succeeded, else the first
 * failure's status (128 + signal for a signal). */
int lg_cli_launch(int n, char **argv);

#endif
