/* rt_version.c - the runtime's version string, checked against the generated program. */
const char *moe_runtime_version(void) { return "0.1.0"; }
