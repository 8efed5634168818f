/* peft_ref.cuh: LoRA the way PEFT runs it, unfused, for bench/bench_lora.c to compare FusedLoRA against:
 * the skinny GEMMs are cuBLASLt calls, and these are the elementwise kernels between them. Dropout draws the
 * same Philox mask as FusedLoRA (lg_philox.h) so the two compositions' outputs compare element for element.
 *
 * One thread per 16-byte vector (8 values) of a contiguous buffer of cnt values (cnt % 8 == 0); any block
 * size, grid ceil(cnt / 8 / blockDim.x). */

/* out = dropout(x) · ks, and the keep mask (one byte per element) for the backward. */
static __device__ __forceinline__ void lg_peft_dropout(const lg_h16 *x, lg_h16 *out, unsigned char *mask,
                                                       long long cnt, unsigned long long seed, unsigned layer,
                                                       unsigned th, float ks)
{
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g * 8 >= cnt)
        return;
    unsigned bits = lg_dropout_keep8(seed, layer, g, th);
    lg_v16 v = *(const lg_v16 *)(x + g * 8);
    unsigned w[4] = {v.x, v.y, v.z, v.w};
    for (int i = 0; i < 4; i++) {
        float lo = ((bits >> (2 * i)) & 1) ? lg_lo_f32(w[i]) * ks : 0.f;
        float hi = ((bits >> (2 * i + 1)) & 1) ? lg_hi_f32(w[i]) * ks : 0.f;
        w[i] = lg_pack2(lo, hi);
        mask[g * 8 + 2 * i] = (bits >> (2 * i)) & 1;
        mask[g * 8 + 2 * i + 1] = (bits >> (2 * i + 1)) & 1;
    }
    *(lg_v16 *)(out + g * 8) = lg_v16{w[0], w[1], w[2], w[3]};
}

/* out = mask ⊙ g_in · ks: dropout's backward from the stored mask (out may be g_in). */
static __device__ __forceinline__ void lg_peft_dropout_bwd(const lg_h16 *g_in, const unsigned char *mask,
                                                           lg_h16 *out, long long cnt, float ks)
{
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g * 8 >= cnt)
        return;
    lg_v16 v = *(const lg_v16 *)(g_in + g * 8);
    unsigned w[4] = {v.x, v.y, v.z, v.w};
    for (int i = 0; i < 4; i++)
        w[i] = lg_pack2(mask[g * 8 + 2 * i] ? lg_lo_f32(w[i]) * ks : 0.f,
                        mask[g * 8 + 2 * i + 1] ? lg_hi_f32(w[i]) * ks : 0.f);
    *(lg_v16 *)(out + g * 8) = lg_v16{w[0], w[1], w[2], w[3]};
}

/* y += a · x */
static __device__ __forceinline__ void lg_peft_axpy(lg_h16 *y, const lg_h16 *x, float a, long long cnt)
{
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g * 8 >= cnt)
        return;
    lg_v16 u = *(const lg_v16 *)(y + g * 8), v = *(const lg_v16 *)(x + g * 8);
    unsigned p[4] = {u.x, u.y, u.z, u.w}, q[4] = {v.x, v.y, v.z, v.w};
    for (int i = 0; i < 4; i++)
        p[i] = lg_pack2(lg_lo_f32(p[i]) + a * lg_lo_f32(q[i]), lg_hi_f32(p[i]) + a * lg_hi_f32(q[i]));
    *(lg_v16 *)(y + g * 8) = lg_v16{p[0], p[1], p[2], p[3]};
}

/* y = a · x */
static __device__ __forceinline__ void lg_peft_scale(const lg_h16 *x, lg_h16 *y, float a, long long cnt)
{
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g * 8 >= cnt)
        return;
    lg_v16 v = *(const lg_v16 *)(x + g * 8);
    unsigned q[4] = {v.x, v.y, v.z, v.w};
    for (int i = 0; i < 4; i++)
        q[i] = lg_pack2(a * lg_lo_f32(q[i]), a * lg_hi_f32(q[i]));
    *(lg_v16 *)(y + g * 8) = lg_v16{q[0], q[1], q[2], q[3]};
}
