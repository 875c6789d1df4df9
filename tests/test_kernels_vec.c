/*
 * test_kernels_vec.c: the vector distances of kernels/vec.c. Every ISA variant against the
 * scalar reference on random rows of odd lengths (so the vector tails are exercised), the
 * reference against a double-precision sum, and small hand-made cases.
 */
#include <stdlib.h>

#include "base/base.h"
#include "kernels/kernels.h"
#include "test.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float urand(void) /* in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

/* A row of n values of type t (I8 with scale 1/127), and its values as doubles. */
static void make_row(enum kern_vtype t, int64_t n, void *row, double *val, float *scale)
{
    *scale = t == KERN_VTYPE_I8 ? 1.0f / 127.0f : 1.0f;
    for (int64_t i = 0; i < n; i++) {
        float x = urand();
        if (t == KERN_VTYPE_F32) {
            ((float *)row)[i] = x;
            val[i] = x;
        } else if (t == KERN_VTYPE_F16) {
            uint16_t h = kern_fp32_to_fp16(x);
            ((uint16_t *)row)[i] = h;
            val[i] = kern_fp16_to_fp32(h);
        } else {
            int8_t q = (int8_t)(int)(x * 127.0f);
            ((int8_t *)row)[i] = q;
            val[i] = (double)q * *scale;
        }
    }
}

TEST(kernels_vec, variants_match_reference)
{
    static const int64_t lens[] = {1, 7, 31, 384, 1000};
    float q[1000], row_f[1000];
    double val[1000];
    int n_checked = 0;
    for (int t = 0; t < 3; t++) {
        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            int64_t n = lens[li];
            float scale;
            make_row((enum kern_vtype)t, n, row_f, val, &scale);
            for (int64_t i = 0; i < n; i++) q[i] = urand();
            double dot = 0, l2 = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                dot += val[i] * q[i];
                l2 += (val[i] - q[i]) * (val[i] - q[i]);
                mag += fabs(val[i] * q[i]);
            }
            /* float sums of n terms in any order: errors of about sqrt(n) * 2^-24 of the summed
             * magnitudes (with margin); one dropped term (~0.25) would be far outside */
            double tol_dot = 2e-6 * sqrt((double)n) * (mag + 1e-3), tol_l2 = 2e-6 * sqrt((double)n) * (l2 + 1e-3);
            REQUIRE(kern_isa_force(KERN_ISA_SCALAR) == DK_OK);
            float ref_dot = kern_vec_dot((enum kern_vtype)t, row_f, scale, q, n);
            float ref_l2 = kern_vec_l2sq((enum kern_vtype)t, row_f, scale, q, n);
            CHECK_NEAR(ref_dot, dot, tol_dot);
            CHECK_NEAR(ref_l2, l2, tol_l2);
            for (int isa = 1; isa < KERN_ISA_COUNT; isa++) {
                if (!kern_isa_supported((enum kern_isa)isa)) continue;
                REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
                float d = kern_vec_dot((enum kern_vtype)t, row_f, scale, q, n);
                float l = kern_vec_l2sq((enum kern_vtype)t, row_f, scale, q, n);
                CHECK_MSG(fabs((double)d - ref_dot) <= tol_dot, "dot type %d n %lld %s: %g vs %g", t, (long long)n,
                          kern_isa_name((enum kern_isa)isa), d, ref_dot);
                CHECK_MSG(fabs((double)l - ref_l2) <= tol_l2, "l2sq type %d n %lld %s: %g vs %g", t, (long long)n,
                          kern_isa_name((enum kern_isa)isa), l, ref_l2);
                n_checked++;
            }
        }
    }
    kern_isa_force(kern_isa_best());
    test_log("variant checks: %d (type x length x isa)", n_checked);
}

TEST(kernels_vec, handmade)
{
    const float q[3] = {1, 2, 3};
    const float f[3] = {4, 5, 6};
    const uint16_t h[3] = {kern_fp32_to_fp16(4), kern_fp32_to_fp16(5), kern_fp32_to_fp16(6)};
    const int8_t b[3] = {8, 10, -12};
    for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
        if (!kern_isa_supported((enum kern_isa)isa)) continue;
        REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
        CHECK_NEAR(kern_vec_dot(KERN_VTYPE_F32, f, 0, q, 3), 32, 0);
        CHECK_NEAR(kern_vec_dot(KERN_VTYPE_F16, h, 0, q, 3), 32, 0);
        CHECK_NEAR(kern_vec_dot(KERN_VTYPE_I8, b, 0.5f, q, 3), 4 + 10 - 18, 0);
        CHECK_NEAR(kern_vec_l2sq(KERN_VTYPE_F32, f, 0, q, 3), 27, 0);
        CHECK_NEAR(kern_vec_l2sq(KERN_VTYPE_F16, h, 0, q, 3), 27, 0);
        CHECK_NEAR(kern_vec_l2sq(KERN_VTYPE_I8, b, 0.5f, q, 3), 9 + 9 + 81, 0);
        CHECK_NEAR(kern_vec_dot(KERN_VTYPE_F32, f, 0, q, 0), 0, 0);
    }
    kern_isa_force(kern_isa_best());
}
