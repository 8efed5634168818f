/* random_model.c: a Hugging Face model directory with random weights (lg_model_write_random): config.json and
 * model.safetensors with every tensor the decoder reads, drawn as transformers initialises a fresh model
 * (normal, std 0.02; norm weights 1; biases 0), from a seed. The bytes are a function of (config, dtype,
 * seed), so the README's tiny model is the same on every machine. Large models are written a chunk at a time
 * through the safetensors writer's callback, never whole in memory. */
#include "lg_half.h"
#include "train_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum fill { FILL_NORMAL, FILL_ONE, FILL_ZERO };

struct gen_tensor {
    char name[160];
    enum fill fill;
    uint64_t seed;
    enum lg_st_dtype dtype;
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Element e of a tensor: a function of (seed, e) alone, so any chunk can be produced on its own. */
static float value(const struct gen_tensor *g, uint64_t e)
{
    if (g->fill != FILL_NORMAL)
        return g->fill == FILL_ONE ? 1.0f : 0.0f;
    uint64_t s = g->seed ^ (e * 0xd1342543de82ef95ull);
    double u1 = ((double)(splitmix(&s) >> 11) + 1.0) * 0x1.0p-53, u2 = (double)(splitmix(&s) >> 11) * 0x1.0p-53;
    return (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

/* Elements [e0, e1) of a tensor into out (out holds element e0 first). */
static void gen_range(const struct gen_tensor *g, uint64_t e0, uint64_t e1, unsigned char *out)
{
    for (uint64_t e = e0; e < e1; e++) {
        float v = value(g, e);
        if (g->dtype == LG_ST_F32) {
            memcpy(out + (e - e0) * 4, &v, 4);
        } else {
            uint16_t h = g->dtype == LG_ST_BF16 ? lg_f32_to_bf16(v) : lg_f32_to_f16(v);
            memcpy(out + (e - e0) * 2, &h, 2);
        }
    }
}

struct gen_part {
    const struct gen_tensor *g;
    uint64_t e0, e1;
    unsigned char *out;
};

static void *gen_thread(void *arg)
{
    const struct gen_part *p = arg;
    gen_range(p->g, p->e0, p->e1, p->out);
    return NULL;
}

#define GEN_THREADS 32

/* A chunk of a tensor, spread over the machine's cores (an 8B model is 8 billion normals); every element is a
 * function of (seed, index) alone, so the bytes do not depend on the number of threads. */
static enum lg_status gen_read(void *user, uint64_t offset, void *buf, size_t n)
{
    const struct gen_tensor *g = user;
    size_t es = lg_st_dtype_size(g->dtype);
    uint64_t e0 = offset / es, e1 = (offset + n) / es;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = cpus < 1 ? 1 : cpus > GEN_THREADS ? GEN_THREADS : (int)cpus;
    if (g->fill != FILL_NORMAL || e1 - e0 < (1u << 16))
        nt = 1;
    struct gen_part part[GEN_THREADS];
    pthread_t th[GEN_THREADS];
    int running[GEN_THREADS] = {0};
    for (int t = 0; t < nt; t++) {
        uint64_t a = e0 + (e1 - e0) * (uint64_t)t / (uint64_t)nt, b = e0 + (e1 - e0) * (uint64_t)(t + 1) / (uint64_t)nt;
        part[t] = (struct gen_part){g, a, b, (unsigned char *)buf + (a - e0) * es};
        /* the last part runs here, and so does any part the system cannot start a thread for */
        running[t] = t < nt - 1 && pthread_create(&th[t], NULL, gen_thread, &part[t]) == 0;
        if (!running[t])
            gen_thread(&part[t]);
    }
    for (int t = 0; t < nt; t++)
        if (running[t])
            pthread_join(th[t], NULL);
    return LG_OK;
}

struct builder {
    struct lg_st_write_tensor *w;
    struct gen_tensor *g;
    size_t n, cap;
    uint64_t seed;
    enum lg_st_dtype dtype;
};

static int add(struct builder *b, const char *name, enum fill fill, int ndim, int64_t d0, int64_t d1)
{
    if (b->n == b->cap)
        return 0;
    struct gen_tensor *g = &b->g[b->n];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->fill = fill;
    g->dtype = b->dtype;
    uint64_t s = b->seed;
    for (const char *p = name; *p; p++)
        s = (s ^ (uint64_t)(unsigned char)*p) * 0x100000001b3ull;
    g->seed = splitmix(&s);
    b->w[b->n] = (struct lg_st_write_tensor){.name = g->name, .dtype = b->dtype, .ndim = ndim, .shape = {d0, d1},
                                            .read = gen_read, .user = g};
    b->n++;
    return 1;
}

static int add_layer(struct builder *b, const struct lg_model_config *c, int l)
{
    int64_t H = c->hidden_size, F = c->intermediate_size, Q = (int64_t)c->num_attention_heads * c->head_dim,
            KV = (int64_t)c->num_key_value_heads * c->head_dim;
    char n[160];
    int ok = 1;
#define T(fmt, fill, nd, a, b2)                                                                                \
    do {                                                                                                     \
        snprintf(n, sizeof n, "model.layers.%d." fmt, l);                                                    \
        ok = ok && add(b, n, fill, nd, a, b2);                                                               \
    } while (0)
    T("input_layernorm.weight", FILL_ONE, 1, H, 0);
    T("post_attention_layernorm.weight", FILL_ONE, 1, H, 0);
    T("self_attn.q_proj.weight", FILL_NORMAL, 2, Q, H);
    T("self_attn.k_proj.weight", FILL_NORMAL, 2, KV, H);
    T("self_attn.v_proj.weight", FILL_NORMAL, 2, KV, H);
    T("self_attn.o_proj.weight", FILL_NORMAL, 2, H, Q);
    if (c->qkv_bias) {
        T("self_attn.q_proj.bias", FILL_ZERO, 1, Q, 0);
        T("self_attn.k_proj.bias", FILL_ZERO, 1, KV, 0);
        T("self_attn.v_proj.bias", FILL_ZERO, 1, KV, 0);
    }
    if (c->o_bias)
        T("self_attn.o_proj.bias", FILL_ZERO, 1, H, 0);
    T("mlp.gate_proj.weight", FILL_NORMAL, 2, F, H);
    T("mlp.up_proj.weight", FILL_NORMAL, 2, F, H);
    T("mlp.down_proj.weight", FILL_NORMAL, 2, H, F);
#undef T
    return ok;
}

enum lg_status lg_model_write_random(const struct lg_model_config *c, enum lg_dtype dtype, const char *out_dir,
                                     uint64_t seed)
{
    if (!c || !out_dir)
        return lg_fail(LG_ERR_INVALID, "lg_model_write_random: null argument");
    if (c->hidden_size < 1 || c->intermediate_size < 1 || c->num_hidden_layers < 1 || c->vocab_size < 1 ||
        c->num_attention_heads < 1 || c->num_key_value_heads < 1 || c->head_dim < 2)
        return lg_fail(LG_ERR_INVALID, "lg_model_write_random: every dimension must be set");
    size_t cap = 3 + (size_t)c->num_hidden_layers * 14;
    struct builder b = {.w = calloc(cap, sizeof *b.w), .g = calloc(cap, sizeof *b.g), .cap = cap, .seed = seed,
                        .dtype = lg_st_dtype_of(dtype)};
    enum lg_status s = b.w && b.g ? LG_OK : lg_fail(LG_ERR_OOM, "init-model: out of memory");
    int ok = s == LG_OK;
    int64_t V = c->vocab_size, H = c->hidden_size;
    ok = ok && add(&b, "model.embed_tokens.weight", FILL_NORMAL, 2, V, H);
    ok = ok && add(&b, "model.norm.weight", FILL_ONE, 1, H, 0);
    if (!c->tie_word_embeddings)
        ok = ok && add(&b, "lm_head.weight", FILL_NORMAL, 2, V, H);
    for (int l = 0; ok && l < c->num_hidden_layers; l++)
        ok = add_layer(&b, c, l);
    if (s == LG_OK && !ok)
        s = lg_fail(LG_ERR_INTERNAL, "init-model: tensor table overflow");
    if (s == LG_OK)
        s = lg_dir_create(out_dir);
    if (s == LG_OK) {
        struct lg_model_config cc = *c;
        cc.has_dtype = 1;
        cc.dtype = dtype;
        char path[2048];
        snprintf(path, sizeof path, "%s/config.json", out_dir);
        s = lg_model_config_write(path, &cc);
    }
    if (s == LG_OK)
        s = lg_st_write_model(out_dir, b.w, b.n, 5ull << 30, NULL);
    free(b.w);
    free(b.g);
    return s;
}
