/* linear.c: the frozen fp32 projections of the CPU backend, y = x·Wᵀ (+ bias) and dx = dy·W (lg_ref_ops.h).
 *
 * The backend spends most of its time here, so the loops are ordered for the cache: the forward computes 4x4
 * blocks of outputs (4 rows of x against 4 rows of W, both contiguous in k) with 16 accumulators, so each
 * loaded element serves four products; the backward adds 4 rows' dy[i,o]·W[o,:] into a 256-column slice of dx
 * held in double (i-k-j order, contiguous and vectorisable). Every output is still one double sum in a fixed
 * order (k for the forward, o for the backward), so blocking changes no result. */
#include "lg_ref_impl.h"

#include <string.h>

#define KC 256 /* dx columns per slice: 4 rows × 256 doubles = 8 KiB of accumulators */

void lg_ref_dot4x4(const float *x, const float *w, int64_t K, double acc[4][4])
{
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K, *x3 = x + 3 * K;
    const float *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
    double a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
    double a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
    for (int64_t k = 0; k < K; k++) {
        const double v0 = x0[k], v1 = x1[k], v2 = x2[k], v3 = x3[k];
        const double u0 = w0[k], u1 = w1[k], u2 = w2[k], u3 = w3[k];
        a00 += v0 * u0, a01 += v0 * u1, a02 += v0 * u2, a03 += v0 * u3;
        a10 += v1 * u0, a11 += v1 * u1, a12 += v1 * u2, a13 += v1 * u3;
        a20 += v2 * u0, a21 += v2 * u1, a22 += v2 * u2, a23 += v2 * u3;
        a30 += v3 * u0, a31 += v3 * u1, a32 += v3 * u2, a33 += v3 * u3;
    }
    acc[0][0] = a00, acc[0][1] = a01, acc[0][2] = a02, acc[0][3] = a03;
    acc[1][0] = a10, acc[1][1] = a11, acc[1][2] = a12, acc[1][3] = a13;
    acc[2][0] = a20, acc[2][1] = a21, acc[2][2] = a22, acc[2][3] = a23;
    acc[3][0] = a30, acc[3][1] = a31, acc[3][2] = a32, acc[3][3] = a33;
}

static double dot1(const float *x, const float *w, int64_t K)
{
    double acc = 0;
    for (int64_t k = 0; k < K; k++)
        acc += (double)x[k] * w[k];
    return acc;
}

void lg_ref_linear_forward(const struct lg_ref_linear *L, int64_t n, const float *x, float *y)
{
    const int64_t K = L->K, M = L->M;
    for (int64_t i = 0; i < n; i += 4) {
        const int ni = n - i < 4 ? (int)(n - i) : 4;
        for (int64_t o = 0; o < M; o += 4) {
            const int no = M - o < 4 ? (int)(M - o) : 4;
            double acc[4][4];
            if (ni == 4 && no == 4)
                lg_ref_dot4x4(x + i * K, L->w + o * K, K, acc);
            else
                for (int a = 0; a < ni; a++)
                    for (int b = 0; b < no; b++)
                        acc[a][b] = dot1(x + (i + a) * K, L->w + (o + b) * K, K);
            for (int a = 0; a < ni; a++)
                for (int b = 0; b < no; b++)
                    y[(i + a) * M + o + b] = (float)(acc[a][b] + (L->bias ? (double)L->bias[o + b] : 0.0));
        }
    }
}

void lg_ref_linear_backward(const struct lg_ref_linear *L, int64_t n, const float *dy, float *dx)
{
    const int64_t K = L->K, M = L->M;
    double acc[4][KC];
    for (int64_t i = 0; i < n; i += 4) {
        const int ni = n - i < 4 ? (int)(n - i) : 4;
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t nk = K - k0 < KC ? K - k0 : KC;
            memset(acc, 0, sizeof acc);
            for (int64_t o = 0; o < M; o++) {
                const float *w = L->w + o * K + k0;
                for (int a = 0; a < ni; a++) {
                    const double d = dy[(i + a) * M + o];
                    double *ac = acc[a];
                    for (int64_t k = 0; k < nk; k++)
                        ac[k] += d * w[k];
                }
            }
            for (int a = 0; a < ni; a++)
                for (int64_t k = 0; k < nk; k++)
                    dx[(i + a) * K + k0 + k] = (float)acc[a][k];
        }
    }
}
