/* cmd_gen.c: placeholder, replaced below. */
#include "cli.h"
int lg_cmd_gen(int argc, char **argv) { return 1; }
