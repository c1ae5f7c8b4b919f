/* core/stack: loading services, one service for a reload, moving a stack, and a
 * native configuration named by a key (file, inline mapping, default, errors). */
#include "core/stack.h"
#include "demo_app/demo_app.h"
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const struct role_ops *const roles[] = { &demo_app_role, NULL };

TEST(stack_load_one_parses_only_its_service)
{
    struct stack st;
    struct cfg_errors e = { 0 };
    /* b is broken, but a reload of a reads a alone (b only has its role checked) */
    const char *text = "services:\n  a: {role: demo-app, listen: [\"127.0.0.1:1\"]}\n"
                       "  b: {role: demo-app, listen: [\"127.0.0.1:2\"], threads: lots}\n";
    CHECK_INT(stack_load_one(&st, "s.yaml", text, "a", &demo_app_role, &e), 0);
    CHECK(stack_find(&st, "a") && stack_find(&st, "a")->conf);
    stack_free(&st);
    cfg_errors_free(&e);
    CHECK(stack_load(&st, "s.yaml", text, roles, &e) < 0);
    CHECK(e.n == 1 && strstr(e.msgs[0], "s.yaml:3:") && strstr(e.msgs[0], "services.b.threads"));
    stack_free(&st);
    cfg_errors_free(&e);
}

TEST(stack_refuses_two_services_on_one_address)
{
    struct stack st;
    struct cfg_errors e = { 0 };
    CHECK(stack_load(&st, "s.yaml",
                     "services:\n  a: {role: demo-app, listen: [\"127.0.0.1:7\"]}\n"
                     "  b: {role: demo-app, listen: [\"127.0.0.1:7\"]}\n",
                     roles, &e) < 0);
    CHECK(e.n >= 1);
    stack_free(&st);
    cfg_errors_free(&e);
}

TEST(stack_move_repoints_services)
{
    struct stack a, b;
    struct cfg_errors e = { 0 };
    CHECK_INT(stack_load(&a, "s.yaml", "services:\n  x: {role: demo-app, listen: [\"127.0.0.1:1\"]}\n", roles,
                         &e), 0);
    stack_move(&b, &a);
    CHECK_INT(a.nservices, 0);
    CHECK_INT(b.nservices, 1);
    CHECK(b.services[0].stack == &b);
    stack_free(&a);     /* empty: a no-op */
    stack_free(&b);
    cfg_errors_free(&e);
}

/* A native document: a mapping whose keys are counted; "bad: x" is an error. */
struct native_seen {
    int calls;
    size_t keys;
    char dir[256];
};

static int native_parse(struct cfg *c, const cfg_node *root, const char *path, const char *dir, void *arg)
{
    struct native_seen *s = arg;
    s->calls++;
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    if (!cfg_is_map(root))
        return cfg_error(c, root, path, "expected a mapping");
    s->keys = cfg_len(root);
    for (size_t i = 0; i < s->keys; i++)
        if (strcmp(cfg_scalar(cfg_map_key(c, root, i)), "bad") == 0)
            return cfg_error(c, cfg_map_value(c, root, i), path, "bad value");
    return 0;
}

/* Runs stack_native_config on the value of `native:` in yaml (NULL: key absent),
 * for a service of a stack file in dir. */
static int native(const char *dir, const char *yaml, const char *def, struct native_seen *seen, char **text,
                  struct cfg_errors *e)
{
    char stackp[300];
    snprintf(stackp, sizeof(stackp), "%s/stack.yaml", dir);
    FILE *f = fopen(stackp, "w");
    fputs("services:\n  x: {role: demo-app, listen: [\"127.0.0.1:1\"]}\n", f);
    fclose(f);
    struct stack st;
    memset(seen, 0, sizeof(*seen));
    memset(e, 0, sizeof(*e));
    *text = NULL;
    if (stack_load(&st, stackp, NULL, roles, e))
        return -100;
    struct cfg c;
    const char *src = yaml ? yaml : "other: 1\n";
    cfg_load_string(&c, "k.yaml", src, strlen(src), e);
    const cfg_node *n = yaml ? cfg_map_value(&c, cfg_root(&c), 0) : NULL;
    int r = stack_native_config(&c, n, "native", &st.services[0], "doc", def, native_parse, seen, text);
    cfg_free(&c);
    stack_free(&st);
    unlink(stackp);
    return r;
}

TEST(stack_native_config_file_inline_default)
{
    char dir[] = "/tmp/cairn-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300];
    snprintf(path, sizeof(path), "%s/doc.yml", dir);
    FILE *f = fopen(path, "w");
    fputs("a: 1\nb: 2\n", f);
    fclose(f);
    struct native_seen seen;
    struct cfg_errors e;
    char *text;

    /* a file named relative to the stack file: parsed, its text returned */
    CHECK_INT(native(dir, "native: doc.yml\n", NULL, &seen, &text, &e), 0);
    CHECK(seen.calls == 1 && seen.keys == 2);
    CHECK_STR(seen.dir, dir);
    CHECK_STR(text, "a: 1\nb: 2\n");
    free(text);
    cfg_errors_free(&e);

    /* inline */
    CHECK_INT(native(dir, "native: {a: 1}\n", NULL, &seen, &text, &e), 0);
    CHECK(seen.calls == 1 && seen.keys == 1 && text == NULL);
    cfg_errors_free(&e);

    /* absent: the default document, or 1 without one */
    CHECK_INT(native(dir, NULL, "x: 1\ny: 2\nz: 3\n", &seen, &text, &e), 0);
    CHECK(seen.calls == 1 && seen.keys == 3);
    cfg_errors_free(&e);
    CHECK_INT(native(dir, NULL, NULL, &seen, &text, &e), 1);
    CHECK_INT(seen.calls, 0);
    cfg_errors_free(&e);

    /* errors: a missing file, and one inside the file with its own location */
    CHECK_INT(native(dir, "native: nowhere.yml\n", NULL, &seen, &text, &e), -EINVAL);
    CHECK(e.n >= 1 && strstr(e.msgs[0], "nowhere.yml"));
    cfg_errors_free(&e);
    f = fopen(path, "w");
    fputs("a: 1\nbad: 2\n", f);
    fclose(f);
    CHECK_INT(native(dir, "native: doc.yml\n", NULL, &seen, &text, &e), -EINVAL);
    CHECK(e.n == 1 && strstr(e.msgs[0], "doc.yml:2:") && strstr(e.msgs[0], "bad value"));
    free(text);
    cfg_errors_free(&e);
    unlink(path);
    rmdir(dir);
}

TEST(stack_advertise_names_gives_wildcard_listeners_their_name)
{
    struct stack st;
    struct cfg_errors e = { 0 };
    const char *text = "advertise: names\nservices:\n  web: {role: demo-app, listen: [\"0.0.0.0:8081\", \"[::]:8082\"]}\n"
                       "  local: {role: demo-app, listen: [\"127.0.0.1:8083\"]}\n";
    CHECK_INT(stack_load(&st, "s.yaml", text, roles, &e), 0);
    CHECK(st.advertise_names);
    const struct service *w = stack_find(&st, "web"), *l = stack_find(&st, "local");
    CHECK(w && w->nendpoints == 2 && l && l->nendpoints == 1);
    if (w && w->nendpoints == 2 && l) {
        CHECK_STR(w->endpoints[0].url, "http://web:8081/");
        CHECK_STR(w->endpoints[1].url, "http://web:8082/");
        CHECK_STR(l->endpoints[0].url, "http://127.0.0.1:8083/");   /* a literal stays */
    }
    stack_free(&st);
    cfg_errors_free(&e);
    /* by default a wildcard listener's endpoint is its address */
    CHECK_INT(stack_load(&st, "s.yaml", text + strlen("advertise: names\n"), roles, &e), 0);
    CHECK_STR(stack_find(&st, "web")->endpoints[0].url, "http://0.0.0.0:8081/");
    stack_free(&st);
    cfg_errors_free(&e);
    CHECK(stack_load(&st, "s.yaml", "advertise: dns\nservices:\n  a: {role: demo-app, listen: [\"127.0.0.1:1\"]}\n",
                     roles, &e) < 0);
    CHECK(e.n == 1 && strstr(e.msgs[0], "s.yaml:1:12: advertise: expected addresses (the default) or names"));
    stack_free(&st);
    cfg_errors_free(&e);
}

TEST(net_resolve_takes_literals_and_names)
{
    struct net_addr a;
    CHECK_INT(net_resolve("127.0.0.1:80", &a), 0);
    CHECK_INT(net_addr_port(&a), 80);
    CHECK_INT(net_resolve("localhost:8080", &a), 0);
    CHECK_INT(net_addr_port(&a), 8080);
    CHECK_INT(net_resolve("localhost", &a), -EINVAL);
    CHECK_INT(net_resolve("localhost:0", &a), -EINVAL);
    CHECK_INT(net_resolve("bad name:80", &a), -EINVAL);
    CHECK_INT(net_resolve("no-such-host.invalid:80", &a), -ENOENT);
}
