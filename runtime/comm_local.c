/* comm_local.c - the one-process communicator: a sum over one rank is the identity, and an
 * exchange within a group of one rank a copy of the blocks it sends itself. */
#include "rt.h"
#include <string.h>

static void local_f32(const moe_comm *c, float *buf, int64_t n) { (void)c; (void)buf; (void)n; }
static void local_f64(const moe_comm *c, double *buf, int64_t n) { (void)c; (void)buf; (void)n; }
static void local_group_sum(const moe_comm *c, int group, int P, void *buf, int64_t n, int f64) {
    (void)c, (void)group, (void)P, (void)buf, (void)n, (void)f64;
}

/* the blocks of rank 0 to itself, in order on both sides (the same rows in all) */
static void local_exchange(const moe_comm *c, int P, const void *send, const int64_t (*sblk)[2], int ns, void *recv,
                           const int64_t (*rblk)[2], int nr, int64_t row_bytes) {
    (void)c, (void)P;
    int i = 0, j = 0;
    int64_t si = 0, rj = 0;     /* rows of the current blocks already moved */
    while (i < ns && j < nr) {
        int64_t n = sblk[i][1] - si < rblk[j][1] - rj ? sblk[i][1] - si : rblk[j][1] - rj;
        if (n > 0)
            memcpy((char *)recv + (rblk[j][0] + rj) * row_bytes, (const char *)send + (sblk[i][0] + si) * row_bytes,
                   (size_t)(n * row_bytes));
        si += n, rj += n;
        if (si == sblk[i][1]) i++, si = 0;
        if (j < nr && rj == rblk[j][1]) j++, rj = 0;
    }
}

static void local_gather(const moe_comm *c, int P, const float *mine, float *all, int64_t n) {
    (void)c, (void)P;
    if (all && all != mine) memcpy(all, mine, sizeof(float) * (size_t)n);
}

static void local_allgather(const moe_comm *c, int group, int P, const float *mine, float *all, int64_t n) {
    (void)group;
    local_gather(c, P, mine, all, n);
}

static void local_sum_bucket(const moe_comm *c, int slot, int group, int P, float *buf, int64_t n) {
    (void)c, (void)slot, (void)group, (void)P, (void)buf, (void)n;
}

static void local_traffic(const moe_comm *c, int64_t *messages, int64_t *bytes) {
    (void)c;
    *messages = *bytes = 0;
}

const moe_comm *moe_comm_local(void) {
    static const moe_comm comm = {NULL,           0,            1,               1,
                                  local_f32,      local_f64,    local_group_sum, local_exchange,
                                  local_gather,   local_allgather, local_traffic, local_sum_bucket,
                                  local_sum_bucket};
    return &comm;
}
