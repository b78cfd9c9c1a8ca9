/* k_comm.h - communication steps on the CPU: collectives through the runtime's communicator
 * table (moe_program.h), which takes device buffers. In one process they are identities.
 * Not here: the all-to-all of a one-process expert group, a row copy (k_act.h: k_copy_rows).
 */
#ifndef MOE_K_COMM_H
#define MOE_K_COMM_H
#include "k_common.h"
#include "k_optim.h" /* k_scale */
#include "moe_program.h"

/* buf = the mean of buf over all ranks */
static inline void k_allreduce_mean(const moe_comm *comm, float *buf /* [n] */, long n) {
    if (!comm || comm->world <= 1) return;
    comm->allreduce_f32(comm, buf, n);
    k_scale(buf, 1.0f / (float)comm->world, n);
}
#endif
