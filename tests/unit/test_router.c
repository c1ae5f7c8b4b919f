#include "core/router.h"
#include "test.h"

static void h(struct httpd_req *r, void *arg)
{
    UNUSED(r);
    UNUSED(arg);
}

static const struct http_route routes[] = {
    { "GET", "/", false, h, NULL },
    { "POST", "/items", false, h, NULL },
    { "GET", "/items", false, h, NULL },
    { NULL, "/static/", true, h, NULL },
    { "DELETE", "/items/", true, h, NULL },
};

TEST(router_first_match_404_405)
{
    struct http_router r = { routes, ARRAY_SIZE(routes), NULL, NULL };
    char allow[64];
    CHECK(router_match(&r, STRV("GET"), STRV("/"), allow, sizeof(allow)) == &routes[0]);
    CHECK(router_match(&r, STRV("HEAD"), STRV("/"), allow, sizeof(allow)) == &routes[0]);
    CHECK(router_match(&r, STRV("GET"), STRV("/items"), allow, sizeof(allow)) == &routes[2]);
    CHECK(router_match(&r, STRV("POST"), STRV("/items"), allow, sizeof(allow)) == &routes[1]);
    CHECK(router_match(&r, STRV("PATCH"), STRV("/static/x.js"), allow, sizeof(allow)) == &routes[3]);
    CHECK(router_match(&r, STRV("PUT"), STRV("/items"), allow, sizeof(allow)) == NULL);
    CHECK_STR(allow, "POST, GET, HEAD");
    CHECK(router_match(&r, STRV("GET"), STRV("/nope"), allow, sizeof(allow)) == NULL);
    CHECK_STR(allow, "");
    CHECK(router_match(&r, STRV("GET"), STRV("/items/1"), allow, sizeof(allow)) == NULL);
    CHECK_STR(allow, "DELETE");
    CHECK(router_match(&r, STRV("GET"), STRV("/item"), allow, sizeof(allow)) == NULL);
}
