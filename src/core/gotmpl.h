/* gotmpl.h - Go's text/template language, for the files cairn reads that embed it
 * (Alertmanager receiver fields and template files, Prometheus rule annotations).
 *
 * Supported: text and actions with {{- -}} trimming and comments; pipelines with
 * `|`, parenthesized pipelines, variables ($x := ..., $x = ..., $), fields and map
 * keys (.A.b, $x.A), methods with arguments supplied by the caller's method hook;
 * if / else if / else, range (lists, maps in key order, $i, $e :=, else, break,
 * continue), with / else, define, template, block; the functions and, or, not,
 * len, index, slice, print, printf, println, eq, ne, lt, le, gt, ge, html, js,
 * urlquery, plus any the caller registers. Output of a set made for HTML is
 * escaped (&<>"') unless the value was marked safe - a simplification of
 * html/template's contextual escaping.
 *
 * Values live in an arena that the caller frees after execution. Execution is
 * bounded: output size, template call depth and range iterations.
 */
#ifndef CAIRN_GOTMPL_H
#define CAIRN_GOTMPL_H

#include "core/buf.h"
#include "core/common.h"

enum gt_kind { GT_NIL, GT_BOOL, GT_NUM, GT_STR, GT_LIST, GT_MAP };

struct gt_value {
    enum gt_kind k;
    int tag;                        /* the caller's type tag, for its methods */
    bool b;
    bool safe;                      /* a string not to escape in HTML output */
    bool missing_empty;             /* a map whose missing keys read as "" (map[string]string) */
    double num;
    const char *s;
    size_t n;                       /* items of a list or a map */
    struct gt_value **items;
    const char **keys;              /* a map's keys, sorted (gt_map_sort) */
};

struct gt_arena;
struct gt_arena *gt_arena_new(void);
void gt_arena_free(struct gt_arena **a);
void *gt_alloc(struct gt_arena *a, size_t n);          /* zeroed; NULL when out of memory */
const char *gt_strdup(struct gt_arena *a, const char *s, size_t n);

struct gt_value *gt_nil(struct gt_arena *a);
struct gt_value *gt_bool(struct gt_arena *a, bool b);
struct gt_value *gt_num(struct gt_arena *a, double n);
struct gt_value *gt_str(struct gt_arena *a, const char *s);        /* copied */
struct gt_value *gt_list(struct gt_arena *a, size_t n, int tag);   /* n items to fill */
struct gt_value *gt_map(struct gt_arena *a, size_t n, int tag);    /* n keys/items to fill */
void gt_map_sort(struct gt_value *m);
struct gt_value *gt_map_get(const struct gt_value *m, const char *key);
bool gt_truth(const struct gt_value *v);
/* Appends v as Go's fmt prints it with %v. */
void gt_print(struct buf *b, const struct gt_value *v);

typedef struct gt_value *(*gt_func)(struct gt_arena *a, struct gt_value **args, size_t nargs,
                                    char *err, size_t errlen);
/* Called for .name on a value when it is not a key of a map: returns the result,
 * or NULL with *found false when the value has no such method (or NULL with an
 * error message in err and *found true when the call failed). */
typedef struct gt_value *(*gt_method)(struct gt_arena *a, struct gt_value *recv, const char *name,
                                      struct gt_value **args, size_t nargs, bool *found, char *err,
                                      size_t errlen);

struct gt_set;
struct gt_set *gt_set_new(bool html);
void gt_set_free(struct gt_set **set);
int gt_set_func(struct gt_set *set, const char *name, gt_func fn);
/* Registers the functions Prometheus and Alertmanager templates share: toUpper,
 * toLower, title, match (regex search), reReplaceAll ($1 expansion), safeHtml. */
int gt_add_text_funcs(struct gt_set *set);
/* For a function's arguments: exactly want of them, all strings; else false with
 * Go's message in err. */
bool gt_want_strings(struct gt_value **v, size_t n, size_t want, char *err, size_t errlen);
/* Appends s escaped as Go's url.QueryEscape (urlquery): space as '+', %XX. */
void gt_url_query_escape(struct buf *b, const char *s);
/* Appends s with & < > " ' escaped as html/template escapes them. */
void gt_html_escape(struct buf *b, const char *s);
void gt_set_methods(struct gt_set *set, gt_method fn);
/* Parses text as the template called name; its {{define}}s join the set (a later
 * definition replaces an earlier one, as in Go). 0, or -EINVAL with
 * "template: NAME:LINE: message" in err. */
int gt_parse(struct gt_set *set, const char *name, const char *text, char *err, size_t errlen);
bool gt_defined(const struct gt_set *set, const char *name);
/* Runs template name with data as dot, appending to out. 0, or -EINVAL with err. */
int gt_exec(const struct gt_set *set, const char *name, struct gt_value *data, struct gt_arena *a,
            struct buf *out, char *err, size_t errlen);

#define GT_MAX_OUTPUT (4u << 20)
#define GT_MAX_DEPTH 64
#define GT_MAX_ITERATIONS 1000000

#endif
