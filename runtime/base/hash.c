/* hash.c: MurmurHash3 x64/128 (public domain, Austin Appleby), streamed: the JIT's cache keys and entry
 * checksums, and the generator's source fingerprints. Fast, well tested by SMHasher, and 128 bits make an
 * accidental collision a non-event. Not cryptographic. */
#include "lg_base.h"

#include <stdio.h>
#include <string.h>

static const uint64_t C1 = 0x87c37b91114253d5ull, C2 = 0x4cf5ad432745937full;

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t mix_k1(uint64_t k) { return rotl64(k * C1, 31) * C2; }
static uint64_t mix_k2(uint64_t k) { return rotl64(k * C2, 33) * C1; }

static void hash_block(struct lg_hash128 *s, const uint8_t *b)
{
    s->h1 ^= mix_k1(load_le64(b));
    s->h1 = (rotl64(s->h1, 27) + s->h2) * 5 + 0x52dce729;
    s->h2 ^= mix_k2(load_le64(b + 8));
    s->h2 = (rotl64(s->h2, 31) + s->h1) * 5 + 0x38495ab5;
}

void lg_hash128_init(struct lg_hash128 *s, uint32_t seed)
{
    memset(s, 0, sizeof *s);
    s->h1 = s->h2 = seed;
}

void lg_hash128_update(struct lg_hash128 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->len += n;
    if (s->nbuf) {
        size_t take = 16 - s->nbuf < n ? 16 - s->nbuf : n;
        memcpy(s->buf + s->nbuf, p, take);
        s->nbuf += take;
        p += take;
        n -= take;
        if (s->nbuf < 16)
            return;
        hash_block(s, s->buf);
        s->nbuf = 0;
    }
    for (; n >= 16; p += 16, n -= 16)
        hash_block(s, p);
    memcpy(s->buf, p, n);
    s->nbuf = n;
}

void lg_hash128_final(struct lg_hash128 *s, uint64_t out[2])
{
    /* The tail: bytes 0..7 feed k1, 8..15 feed k2, each little endian and zero padded. */
    uint8_t tail[16] = {0};
    memcpy(tail, s->buf, s->nbuf);
    if (s->nbuf > 8)
        s->h2 ^= mix_k2(load_le64(tail + 8));
    if (s->nbuf > 0)
        s->h1 ^= mix_k1(load_le64(tail));
    uint64_t h1 = s->h1 ^ s->len, h2 = s->h2 ^ s->len;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    out[0] = h1;
    out[1] = h2;
}

void lg_hash128(const void *data, size_t n, uint32_t seed, uint64_t out[2])
{
    struct lg_hash128 s;
    lg_hash128_init(&s, seed);
    lg_hash128_update(&s, data, n);
    lg_hash128_final(&s, out);
}


void lg_hash128_hex(const void *data, size_t n, char out[33])
{
    uint64_t h[2];
    lg_hash128(data, n, 0, h);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h[0], (unsigned long long)h[1]);
}
