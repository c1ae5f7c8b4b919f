#include "core/config.h"
#include "demo_app/demo_app.h"
#include "core/stack.h"
#include "test.h"

#include <stdlib.h>
#include <unistd.h>

TEST(config_durations)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = { { "500ms", 500 }, { "2s", 2000 }, { "5m", 300000 }, { "1h30m", 5400000 },
                 { "15d", 15ull * 86400000 }, { "1w", 7ull * 86400000 }, { "0", 0 },
                 { "1y", 365ull * 86400000 }, { "1m30s500ms", 90500 } };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        uint64_t ms = 1;
        if (cfg_parse_duration(good[i].s, &ms) || ms != good[i].ms)
            test_fail(__FILE__, __LINE__, "duration %s -> %llu", good[i].s, (unsigned long long)ms);
    }
    static const char *const bad[] = { "", "5", "5 s", "s", "1.5s", "-1s", "5sec", "30s1m",
                                       "1h1h", "5mo", "1ms1s" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint64_t ms;
        if (cfg_parse_duration(bad[i], &ms) == 0)
            test_fail(__FILE__, __LINE__, "accepted bad duration \"%s\"", bad[i]);
    }
}

TEST(config_sizes)
{
    uint64_t b;
    CHECK_INT(cfg_parse_size("256MiB", &b), 0);
    CHECK(b == 256ull << 20);
    CHECK_INT(cfg_parse_size("1GiB", &b), 0);
    CHECK(b == 1ull << 30);
    CHECK_INT(cfg_parse_size("512KiB", &b), 0);
    CHECK(b == 512ull << 10);
    CHECK_INT(cfg_parse_size("100", &b), 0);
    CHECK(b == 100);
    CHECK_INT(cfg_parse_size("2MB", &b), 0);
    CHECK(b == 2000000);
    static const char *const bad[] = { "", "MiB", "1.5GiB", "10 MiB", "10mib", "-1", "10Q" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (cfg_parse_size(bad[i], &b) == 0)
            test_fail(__FILE__, __LINE__, "accepted bad size \"%s\"", bad[i]);
}

static const struct role_ops *const roles[] = { &demo_app_role, NULL };

static int load(const char *text, struct stack *st, struct cfg_errors *e)
{
    memset(e, 0, sizeof(*e));
    return stack_load(st, "t.yaml", text, roles, e);
}

static bool has_error(const struct cfg_errors *e, const char *needle)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msgs[i], needle))
            return true;
    return false;
}

static void dump(const struct cfg_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "  | %s\n", e->msgs[i]);
}

TEST(stack_loads_valid)
{
    struct stack st;
    struct cfg_errors e;
    int r = load("data_dir: /tmp/x\nlog: {level: debug, format: json}\nservices:\n"
                 "  web:\n    role: demo-app\n    listen: [\"127.0.0.1:9101\", \"[::1]:9101\"]\n"
                 "    threads: 2\n    latency: 100ms\n    error_rate: 0.25\n",
                 &st, &e);
    CHECK_INT(r, 0);
    if (r)
        dump(&e);
    CHECK_INT(st.nservices, 1);
    CHECK_STR(st.data_dir, "/tmp/x");
    CHECK_INT(st.log_level, LOG_DEBUG);
    CHECK_INT(st.log_format, LOG_JSON);
    const struct service *s = stack_find(&st, "web");
    CHECK(s != NULL);
    CHECK_INT(s->nendpoints, 2);
    CHECK_STR(s->endpoints[1].url, "http://[::1]:9101/");
    cfg_errors_free(&e);
    stack_free(&st);
}

TEST(stack_reports_all_errors_with_locations)
{
    struct stack st;
    struct cfg_errors e;
    const char *text =
        "data_dir: x\n"
        "servces: {}\n"                                      /* 2: unknown top-level key */
        "services:\n"
        "  a:\n"
        "    role: demo-app\n"
        "    listen: [\"127.0.0.1:99999\"]\n"                /* 6: bad port */
        "    latency: 5 minutes\n"                           /* 7: bad duration */
        "    thraeds: 2\n"                                   /* 8: unknown key */
        "  b: {role: nope, listen: [\"127.0.0.1:1\"]}\n"     /* 9: unknown role */
        "  c: {role: demo-app, listen: [\"127.0.0.1:7000\"], threads: 0}\n"
        "  d: {role: demo-app, listen: [\"127.0.0.1:7000\"]}\n"   /* same address as c */
        "  Bad_Name: {role: demo-app, listen: [\"127.0.0.1:7001\"]}\n";
    CHECK(load(text, &st, &e) < 0);
    CHECK(has_error(&e, "t.yaml:2:1: unknown key \"servces\""));
    CHECK(has_error(&e, "t.yaml:6:14: services.a.listen[0]: expected an address like 127.0.0.1:8080"));
    CHECK(has_error(&e, "t.yaml:7:14: services.a.latency: expected a duration"));
    CHECK(has_error(&e, "got \"5 minutes\""));
    CHECK(has_error(&e, "t.yaml:8:5: services.a: unknown key \"thraeds\" (expected one of: role, listen"));
    CHECK(has_error(&e, "t.yaml:9:13: services.b.role: unknown role \"nope\""));
    CHECK(has_error(&e, "services.c.threads: expected an integer from 1 to 256, got 0"));
    CHECK(has_error(&e, "address 127.0.0.1:7000 is used twice: by service c and by service d"));
    CHECK(has_error(&e, "t.yaml:12:3: services.Bad_Name: service names are lower-case"));
    if (e.n < 8)
        dump(&e);
    CHECK(e.n >= 8);
    cfg_errors_free(&e);
    stack_free(&st);
}

TEST(stack_yaml_syntax_error_located)
{
    struct stack st;
    struct cfg_errors e;
    CHECK(load("services:\n  a: {role: demo-app\n  b: [\n", &st, &e) < 0);
    CHECK_INT(e.n, 1);
    CHECK(e.n && strstr(e.msgs[0], "t.yaml:") && strstr(e.msgs[0], "YAML syntax error"));
    cfg_errors_free(&e);
    stack_free(&st);
}

TEST(stack_duplicate_keys_and_missing)
{
    struct stack st;
    struct cfg_errors e;
    CHECK(load("services:\n  a: {role: demo-app, listen: [\"127.0.0.1:1\"], threads: 1, threads: 2}\n"
               "  b: {listen: [\"127.0.0.1:2\"]}\n  c: {role: demo-app}\n", &st, &e) < 0);
    CHECK(has_error(&e, "duplicate key \"threads\""));
    CHECK(has_error(&e, "t.yaml:3:6: services.b: missing key \"role\""));
    CHECK(has_error(&e, "services.c: missing key \"listen\""));
    cfg_errors_free(&e);
    stack_free(&st);

    CHECK(load("", &st, &e) < 0);
    CHECK(has_error(&e, "empty"));
    cfg_errors_free(&e);
    stack_free(&st);

    CHECK(load("data_dir: x\n", &st, &e) < 0);
    CHECK(has_error(&e, "missing key \"services\""));
    cfg_errors_free(&e);
    stack_free(&st);

    CHECK(load("[1, 2]\n", &st, &e) < 0);
    CHECK(has_error(&e, "expected a mapping"));
    cfg_errors_free(&e);
    stack_free(&st);
}

TEST(stack_relative_paths_from_file_dir)
{
    char dir[] = "/tmp/cairn-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/stack.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs("data_dir: data\nservices:\n  a: {role: demo-app, listen: [\"127.0.0.1:1\"]}\n", f);
    fclose(f);
    struct stack st;
    struct cfg_errors e = { 0 };
    CHECK_INT(stack_load(&st, path, NULL, roles, &e), 0);
    char want[300];
    snprintf(want, sizeof(want), "%s/data", dir);
    CHECK_STR(st.data_dir, want);
    stack_free(&st);
    cfg_errors_free(&e);
    CHECK(stack_load(&st, "/nonexistent/stack.yaml", NULL, roles, &e) < 0);
    CHECK(has_error(&e, "/nonexistent/stack.yaml: cannot open"));
    stack_free(&st);
    cfg_errors_free(&e);
    unlink(path);
    rmdir(dir);
}
