/* cmd_plan.c: placeholder until the scheduler lands (issue 3). */
#include "cli.h"

int lg_cmd_plan(int argc, char **argv)
{
    lg_cli_error("plan", "not built yet");
    return 1;
}
