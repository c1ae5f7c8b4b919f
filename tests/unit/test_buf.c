#include "core/buf.h"
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
