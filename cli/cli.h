/* cli.h: the `loragen` command's verbs. Each verb lives in its own cmd_<verb>.c and returns the process exit
 * status: 0 on success, 1 on a failure of the work, 2 on bad usage. */
#ifndef LG_CLI_H
#define LG_CLI_H

int lg_cmd_gen(int argc, char **argv);
int lg_cmd_plan(int argc, char **argv);
int lg_cmd_train(int argc, char **argv);
int lg_cmd_eval(int argc, char **argv);
int lg_cmd_merge(int argc, char **argv);
int lg_cmd_init_model(int argc, char **argv);
int lg_cmd_tune(int argc, char **argv);

/* Prints "loragen VERB: " + message to stderr (pass lg_last_error() as an argument to show the detail). */
void lg_cli_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
