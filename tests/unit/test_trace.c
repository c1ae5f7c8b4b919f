#include "test.h"
#include "core/trace.h"

TEST(trace_parse_valid_and_roundtrip)
{
    struct trace_ctx t;
    const char *v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    CHECK_INT(trace_parse(strv_cstr(v), &t), 0);
    CHECK_INT(t.flags, 1);
    CHECK_INT(t.trace_id[0], 0x4b);
    char out[TRACEPARENT_LEN + 1];
    trace_format(&t, out);
    CHECK_STR(out, v);
    struct trace_ctx child;
    trace_child(&t, &child);
    CHECK(memcmp(child.trace_id, t.trace_id, 16) == 0);
    CHECK(memcmp(child.span_id, t.span_id, 8) != 0);
}

TEST(trace_parse_rejects)
{
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",         /* short */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        /* zero span */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        /* version ff */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",        /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  /* v00 + extra */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    struct trace_ctx t;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (trace_parse(strv_cstr(bad[i]), &t) == 0)
            test_fail(__FILE__, __LINE__, "accepted bad traceparent \"%s\"", bad[i]);
    /* a future version may carry more fields */
    CHECK_INT(trace_parse(strv_cstr("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"), &t), 0);
}

TEST(trace_new_is_valid)
{
    for (int i = 0; i < 100; i++) {
        struct trace_ctx t, u;
        char s[TRACEPARENT_LEN + 1];
        trace_new(&t);
        trace_format(&t, s);
        CHECK_INT(strlen(s), TRACEPARENT_LEN);
        CHECK_INT(trace_parse(strv_cstr(s), &u), 0);
    }
}
