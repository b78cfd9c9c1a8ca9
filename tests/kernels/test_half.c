/* test_half.c - kernels/common/moe_half.h against references built from the formats'
 * definitions: every f16 widens to its value (sign, exponent, significand by ldexp); f32 values
 * round to the nearest f16 / bf16 with ties to even: every f16 value itself, every midpoint
 * between neighbours (a tie) and one f32 step either side of it, the overflow and underflow
 * edges, and random floats against the two neighbours of the result; NaNs stay quiet NaNs. */
#include "moe_half.h"
#include "kt.h"
#include <stdint.h>

static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t u_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* an f16 pattern's value by its definition */
static double f16_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31 ? (m ? NAN : INFINITY) : e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return h & 0x8000 ? -v : v;
}

static void test_widen(void) {
    KT_CASE("f16 -> f32, all 65536 patterns; bf16 -> f32");
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = f_of(moe_f16_to_f32((uint16_t)h));
        double want = f16_value((uint16_t)h);
        if (isnan(want) ? !isnan(got) : (double)got != want || !signbit(got) != !signbit(want)) bad++;
    }
    KT_EXPECT(bad == 0, "%d patterns widen wrongly", bad);
    KT_EXPECT(f_of(moe_bf16_to_f32(0x3f80)) == 1.0f && f_of(moe_bf16_to_f32(0xc040)) == -3.0f, "bf16 widening");
}

/* x must round to h: nearest, ties to the even pattern */
static int rounds_to(float x, uint16_t h) { return moe_f16_from_f32(u_of(x)) == h; }

static void test_f16_round(void) {
    KT_CASE("f32 -> f16: values, ties, neighbours, edges, random");
    int bad = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {             /* positive finite patterns, and their negatives */
        float v = (float)f16_value((uint16_t)h);
        bad += !rounds_to(v, (uint16_t)h) + !rounds_to(-v, (uint16_t)(h | 0x8000));
        if (h + 1 >= 0x7c00) continue;
        float mid = (float)((f16_value((uint16_t)h) + f16_value((uint16_t)(h + 1))) / 2);   /* exact in f32 */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        bad += !rounds_to(mid, even);
        bad += !rounds_to(nextafterf(mid, 0.0f), (uint16_t)h) + !rounds_to(nextafterf(mid, INFINITY), (uint16_t)(h + 1));
    }
    KT_EXPECT(bad == 0, "%d values round wrongly", bad);
    KT_EXPECT(rounds_to(65519.99f, 0x7bff) && rounds_to(65520.0f, 0x7c00) && rounds_to(1e30f, 0x7c00) &&
              rounds_to(-INFINITY, 0xfc00), "overflow");
    KT_EXPECT(rounds_to(ldexpf(1, -25), 0) && rounds_to(nextafterf(ldexpf(1, -25), 1), 1) &&
              rounds_to(3 * ldexpf(1, -25), 2) && rounds_to(1e-30f, 0) && rounds_to(-1e-30f, 0x8000), "underflow");
    uint16_t n = moe_f16_from_f32(0x7fa00001u);           /* a signalling NaN */
    KT_EXPECT((n & 0x7e00) == 0x7e00, "NaN -> %04x, want a quiet NaN", n);
    uint64_t s = 12345;
    int far = 0;
    for (int i = 0; i < 200000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float x = ldexpf((float)(s >> 40) / (float)(1 << 24), (int)(s % 40) - 28) * ((s >> 20) & 1 ? -1 : 1);
        uint16_t h = moe_f16_from_f32(u_of(x));
        double d = fabs(x - f16_value(h)), lo = fabs(x - f16_value((uint16_t)(h - 1))), hi = fabs(x - f16_value((uint16_t)(h + 1)));
        if ((h & 0x7fff) < 0x7c00 && ((h & 0x7fff) > 0 && d > lo) + ((h & 0x7fff) < 0x7bff && d > hi)) far++;
    }
    KT_EXPECT(far == 0, "%d random floats not rounded to the nearest f16", far);
}

static void test_bf16_round(void) {
    KT_CASE("f32 -> bf16: nearest, ties to even, NaN");
    int bad = 0;
    for (uint32_t hi = 0; hi < 0x7f80; hi += 7) {         /* patterns, their midpoints and neighbours */
        uint32_t u = hi << 16;
        bad += moe_bf16_from_f32(u) != hi;
        uint16_t even = (hi & 1) ? (uint16_t)(hi + 1) : (uint16_t)hi;
        bad += moe_bf16_from_f32(u | 0x8000u) != even;
        bad += moe_bf16_from_f32(u | 0x7fffu) != hi || moe_bf16_from_f32(u | 0x8001u) != hi + 1;
    }
    KT_EXPECT(bad == 0, "%d values round wrongly", bad);
    uint16_t n = moe_bf16_from_f32(0xffa00001u);
    KT_EXPECT(n == 0xffe0, "NaN -> %04x, want ffe0", n);
    KT_EXPECT(moe_bf16_from_f32(0x7f7fffffu) == 0x7f80, "the largest float rounds to inf");
}

int main(void) {
    test_widen();
    test_f16_round();
    test_bf16_round();
    return kt_report("test_half");
}
