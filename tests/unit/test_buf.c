#include "core/buf.h"
#include "core/common.h"
#include "test.h"

TEST(buf_append_consume_compact)
{
    struct buf b = BUF_INIT;
    CHECK_INT(buf_used(&b), 0);
    CHECK_INT(buf_puts(&b, "hello "), 0);
    CHECK_INT(buf_printf(&b, "%s %d", "world", 42), 0);
    CHECK_STR(buf_head(&b), "hello world 42");
    buf_consume(&b, 6);
    CHECK_STR(buf_head(&b), "world 42");
    CHECK_INT(b.off, 6);
    buf_compact(&b);
    CHECK_INT(b.off, 0);
    CHECK_STR(buf_head(&b), "world 42");
    buf_consume(&b, buf_used(&b));
    CHECK_INT(b.off, 0);
    CHECK_INT(b.len, 0);
    buf_free(&b);
}

TEST(buf_grows_for_large_printf)
{
    struct buf b = BUF_INIT;
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_INT(buf_printf(&b, "<%s>", big), 0);
    CHECK_INT(buf_used(&b), 5001);
    CHECK(buf_head(&b)[0] == '<' && buf_head(&b)[5000] == '>');
    char *s = buf_steal(&b);
    CHECK_INT(strlen(s), 5001);
    CHECK(b.data == NULL);
    free(s);
}

TEST(buf_reserve_reuses_consumed_front)
{
    struct buf b = BUF_INIT;
    buf_reserve(&b, 100);
    size_t cap = b.cap;
    char fill[1024];
    memset(fill, 'a', sizeof(fill));
    buf_append(&b, fill, cap - 10);
    buf_consume(&b, cap - 20);
    CHECK_INT(buf_reserve(&b, 50), 0);
    CHECK_INT(b.cap, cap);      /* compacted instead of grown */
    CHECK_INT(buf_used(&b), 10);
    buf_free(&b);
}

TEST(buf_json_escape_controls)
{
    struct buf b = BUF_INIT;
    buf_json_escape(&b, "a\"b\\c\nd\x01", 8);
    CHECK_STR(buf_head(&b), "a\\\"b\\\\c\\nd\\u0001");
    buf_free(&b);
}

TEST(buf_gzip_round_trip)
{
    struct buf in = BUF_INIT, gz = BUF_INIT, out = BUF_INIT;
    for (int i = 0; i < 2000; i++)
        buf_printf(&in, "line %d of something compressible\n", i % 17);
    CHECK_INT(buf_gzip(buf_head(&in), buf_used(&in), 6, &gz), 0);
    CHECK(buf_used(&gz) < buf_used(&in) / 4);
    CHECK((unsigned char)buf_head(&gz)[0] == 0x1f && (unsigned char)buf_head(&gz)[1] == 0x8b);
    CHECK_INT(buf_inflate(buf_head(&gz), buf_used(&gz), 0, &out), 0);
    CHECK_INT(buf_used(&out), buf_used(&in));
    CHECK(memcmp(buf_head(&out), buf_head(&in), buf_used(&in)) == 0);
    buf_reset(&gz);
    CHECK_INT(buf_gzip("", 0, 1, &gz), 0);
    buf_reset(&out);
    CHECK_INT(buf_inflate(buf_head(&gz), buf_used(&gz), 0, &out), 0);
    CHECK_INT(buf_used(&out), 0);
    buf_free(&in);
    buf_free(&gz);
    buf_free(&out);
}

/* Integers print as %llu does at every digit-count boundary. */
TEST(buf_u64_digits_boundaries)
{
    char got[24], want[24];
    uint64_t p = 1;
    for (int i = 0; i <= 20; i++) {
        uint64_t vs[] = {p - 1, p, p + 1, p * 2, p * 9 - 1};
        for (size_t j = 0; j < sizeof(vs) / sizeof(vs[0]); j++) {
            got[cairn_u64_digits(vs[j], got)] = 0;
            snprintf(want, sizeof(want), "%llu", (unsigned long long)vs[j]);
            CHECK_STR(got, want);
        }
        if (i < 19)
            p *= 10;
        else
            p = UINT64_MAX;
    }
}

/* A value formatted again, in the same or another mode, prints as it did the
 * first time (the last value is kept per thread). */
TEST(buf_put_float_repeats)
{
    struct buf b = BUF_INIT;
    double vs[] = {1e-5, 1e-5, 0.1, 0.1, 1e-5, -0.0, 0.0, 0.0};
    char modes[] = {'g', 'f', 'j', 'j', 'g', 'g', 'g', 'j'};
    for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
        buf_put_float(&b, vs[i], modes[i]);
        buf_putc(&b, ' ');
    }
    buf_putc(&b, 0);
    CHECK_STR(buf_head(&b), "1e-05 0.00001 0.1 0.1 1e-05 -0 0 0 ");
    buf_free(&b);
}
