/* embed.cuh: the embedding gather out[t, :] = table[ids[t], :] (frozen table, no gradient), one 16-byte vector
 * per thread (blockIdx.x picks the vector, blockIdx.y walks the tokens). The ids are the trainer's (validated on the host when the dataset is read); the kernel
 * still never reads outside the table: an id outside [0, vocab) writes a zero row and adds one to *bad, which
 * the caller reads when it next synchronises. */

static __device__ __forceinline__ void lg_embed(const struct lg_embed_args &p)
{
    const int v = blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= (p.h >> 3))
        return;
    const lg_i64 c = 8 * v;
    const lg_h16 *table = (const lg_h16 *)p.table;
    lg_h16 *out = (lg_h16 *)p.out;
    for (lg_i64 t = blockIdx.y; t < p.n; t += gridDim.y) {
        const int id = p.ids[t];
        const bool ok = id >= 0 && id < p.vocab;
        const lg_v16 v = ok ? lg_ld16(table + (lg_i64)id * p.ldt + c) : lg_v16{0u, 0u, 0u, 0u};
        lg_st16(out + t * p.ldo + c, v);
        if (!ok && c == 0)
            atomicAdd(p.bad, 1);
    }
}
