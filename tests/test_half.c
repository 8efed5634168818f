/* test_half.c: host fp32 <-> bf16/fp16 conversions against known bit patterns and round-trip properties. */
#include "lg_half.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>

START_TEST(bf16_known)
{
    ck_assert_uint_eq(lg_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(lg_f32_to_bf16(-2.0f), 0xc000);
    /* 1 + 2^-8 is a tie between 1 and 1+2^-7: rounds to even (1.0) */
    ck_assert_uint_eq(lg_f32_to_bf16(1.00390625f), 0x3f80);
    ck_assert_uint_eq(lg_f32_to_bf16(1.01171875f), 0x3f82); /* 1+3*2^-8 ties up to even */
    ck_assert(isnan(lg_bf16_to_f32(lg_f32_to_bf16(NAN))));
}
END_TEST

START_TEST(f16_known)
{
    ck_assert_uint_eq(lg_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(lg_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(lg_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(lg_f32_to_f16(1e6f), 0x7c00);
    ck_assert_uint_eq(lg_f32_to_f16(5.9604645e-8f), 0x0001); /* smallest subnormal */
    ck_assert(isnan(lg_f16_to_f32(lg_f32_to_f16(NAN))));
}
END_TEST

START_TEST(roundtrip_every_half)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lg_f16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        ck_assert_uint_eq(lg_f32_to_f16(f), h);
        float g = lg_bf16_to_f32((uint16_t)h);
        if (!isnan(g))
            ck_assert_uint_eq(lg_f32_to_bf16(g), h);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("half");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, bf16_known);
    tcase_add_test(tc, f16_known);
    tcase_add_test(tc, roundtrip_every_half);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
