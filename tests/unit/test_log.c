#include "core/buf.h"
#include "core/log.h"
#include "test.h"

static char *line(enum log_format f, const char *msg, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;
    va_start(ap, msg);
    log_format_line(&b, f, LOG_WARN, msg, ap);
    va_end(ap);
    return buf_steal(&b);
}

TEST(log_logfmt_quotes_when_needed)
{
    char *s = line(LOG_LOGFMT, "a message", "k", "plain", "q", "has space", "e", "",
                   "x", "a=b", (const char *)0);
    CHECK(strncmp(s, "ts=", 3) == 0);
    CHECK_CONTAINS(s, " level=warn ");
    CHECK_CONTAINS(s, " msg=\"a message\"");
    CHECK_CONTAINS(s, " k=plain");
    CHECK_CONTAINS(s, " q=\"has space\"");
    CHECK_CONTAINS(s, " e=\"\"");
    CHECK_CONTAINS(s, " x=\"a=b\"\n");
    free(s);
}

TEST(log_json_escapes)
{
    char *s = line(LOG_JSON, "m", "k", "va\"l\n", (const char *)0);
    CHECK(s[0] == '{');
    CHECK_CONTAINS(s, "\"level\":\"warn\"");
    CHECK_CONTAINS(s, "\"msg\":\"m\"");
    CHECK_CONTAINS(s, "\"k\":\"va\\\"l\\n\"}\n");
    free(s);
}

TEST(log_parse_names)
{
    enum log_level l;
    enum log_format f;
    CHECK_INT(log_level_parse("debug", &l), 0);
    CHECK_INT(l, LOG_DEBUG);
    CHECK(log_level_parse("verbose", &l) < 0);
    CHECK_INT(log_format_parse("json", &f), 0);
    CHECK_INT(f, LOG_JSON);
    CHECK(log_format_parse("xml", &f) < 0);
}
