#include "ui/ui_internal.h"
#include "test.h"

#include <stdlib.h>

TEST(ui_cookie_session_finds_the_id)
{
    char id[65];
    const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char c[200];
    snprintf(c, sizeof(c), "theme=dark; cairn_session=%s; x=1", hex);
    CHECK(ui__cookie_session(strv_cstr(c), id));
    CHECK_STR(id, hex);
    snprintf(c, sizeof(c), "cairn_session=%s", hex);
    CHECK(ui__cookie_session(strv_cstr(c), id));
    /* wrong length, not hex, another cookie's suffix: none */
    CHECK(!ui__cookie_session(strv_cstr("cairn_session=abc"), id));
    snprintf(c, sizeof(c), "cairn_session=%.63sZ", hex);
    CHECK(!ui__cookie_session(strv_cstr(c), id));
    snprintf(c, sizeof(c), "xcairn_session=%s", hex);
    CHECK(!ui__cookie_session(strv_cstr(c), id));
    CHECK(!ui__cookie_session(strv_make("", 0), id));
}

TEST(ui_dashboard_load_reads_grafana_models)
{
    struct ui_dashboard d = { 0 };
    char err[200];
    const char *plain = "{\"uid\":\"abc\",\"title\":\"T\",\"panels\":[{\"type\":\"stat\"}]}";
    CHECK_INT(ui__dashboard_load(plain, strlen(plain), "file", &d, err, sizeof(err)), 0);
    CHECK_STR(d.uid, "abc");
    CHECK_STR(d.title, "T");
    CHECK_CONTAINS(d.json, "\"panels\"");
    ui__dashboard_free(&d);
    /* Grafana's API wraps the model; no uid: the file's name; no title: the uid */
    const char *wrapped = "{\"meta\":{},\"dashboard\":{\"panels\":[]}}";
    memset(&d, 0, sizeof(d));
    CHECK_INT(ui__dashboard_load(wrapped, strlen(wrapped), "from-file", &d, err, sizeof(err)), 0);
    CHECK_STR(d.uid, "from-file");
    CHECK_STR(d.title, "from-file");
    CHECK(!strstr(d.json, "meta"));
    ui__dashboard_free(&d);
    memset(&d, 0, sizeof(d));
    CHECK(ui__dashboard_load("[1,2]", 5, "x", &d, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "JSON object");
    CHECK(ui__dashboard_load("{\"title\":1}", 11, "x", &d, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "no \"panels\" list");
    CHECK(ui__dashboard_load("{\"panels\":[", 11, "x", &d, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "not JSON: line 1");
    const char *baduid = "{\"uid\":\"a/b\",\"panels\":[]}";
    CHECK(ui__dashboard_load(baduid, strlen(baduid), "x", &d, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "uid \"a/b\"");
}

TEST(ui_builtin_dashboards_are_embedded_and_valid)
{
    size_t n = 0;
    for (size_t i = 0; i < ui_nassets; i++) {
        const struct ui_asset *a = &ui_assets[i];
        struct buf raw = BUF_INIT;
        CHECK_INT(buf_inflate((const char *)a->gz, a->gz_len, a->len, &raw), 0);
        CHECK_INT(buf_used(&raw), a->len);
        if (!strncmp(a->path, "dashboards/", 11)) {
            struct ui_dashboard d = { 0 };
            char err[200] = "";
            CHECK_INT(ui__dashboard_load(raw.data, buf_used(&raw), "x", &d, err, sizeof(err)), 0);
            CHECK(!strncmp(d.uid, "cairn-", 6));
            ui__dashboard_free(&d);
            n++;
        } else if (a->immutable) {
            CHECK(!strncmp(a->path, "/assets/", 8));
        }
        buf_free(&raw);
    }
    CHECK(n >= 12);
}
