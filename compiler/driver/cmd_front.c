/* placeholder until the front end lands */
#include "commands.h"
int moec_cmd_check(int argc, char **argv) { (void)argc; (void)argv; return 1; }
int moec_cmd_stats(int argc, char **argv) { (void)argc; (void)argv; return 1; }
