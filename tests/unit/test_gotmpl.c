/* Unit tests for the Go text/template engine (src/core/gotmpl.c): outputs are the
 * ones Go's text/template gives for the same template and data. */
#include "core/gotmpl.h"
#include "test.h"

#include <ctype.h>
#include <stdlib.h>

static struct gt_value *data(struct gt_arena *a)
{
    struct gt_value *labels = gt_map(a, 2, 0);
    labels->keys[0] = "severity";
    labels->items[0] = gt_str(a, "page");
    labels->keys[1] = "alertname";
    labels->items[1] = gt_str(a, "Disk<Full>");
    labels->missing_empty = true;
    gt_map_sort(labels);
    struct gt_value *list = gt_list(a, 3, 0);
    list->items[0] = gt_str(a, "a");
    list->items[1] = gt_str(a, "b");
    list->items[2] = gt_str(a, "c");
    struct gt_value *d = gt_map(a, 5, 0);
    d->keys[0] = "Name";
    d->items[0] = gt_str(a, "cairn");
    d->keys[1] = "Labels";
    d->items[1] = labels;
    d->keys[2] = "List";
    d->items[2] = list;
    d->keys[3] = "N";
    d->items[3] = gt_num(a, 2.5);
    d->keys[4] = "Empty";
    d->items[4] = gt_list(a, 0, 0);
    gt_map_sort(d);
    return d;
}

static struct gt_value *upper(struct gt_arena *a, struct gt_value **args, size_t n, char *err,
                              size_t errlen)
{
    if (n != 1 || args[0]->k != GT_STR) {
        snprintf(err, errlen, "want one string");
        return NULL;
    }
    char *s = strdup(args[0]->s);
    for (char *p = s; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    struct gt_value *v = gt_str(a, s);
    free(s);
    return v;
}

static const char *run(struct gt_set *set, const char *tmpl, char *out, size_t outlen)
{
    char err[400];
    struct gt_arena *a = gt_arena_new();
    struct buf b = BUF_INIT;
    if (gt_parse(set, "t", tmpl, err, sizeof(err)) ||
        gt_exec(set, "t", data(a), a, &b, err, sizeof(err))) {
        snprintf(out, outlen, "ERR %s", err);
    } else {
        buf_putc(&b, 0);
        snprintf(out, outlen, "%s", buf_head(&b));
    }
    buf_free(&b);
    gt_arena_free(&a);
    return out;
}

TEST(gotmpl_language)
{
    struct gt_set *s = gt_set_new(false);
    gt_set_func(s, "toUpper", upper);
    char o[600];
    CHECK_STR(run(s, "Hello {{ .Name }}!", o, sizeof(o)), "Hello cairn!");
    CHECK_STR(run(s, "a  {{- .Name -}}  b", o, sizeof(o)), "acairnb");
    CHECK_STR(run(s, "{{/* a comment */}}x{{- /* trimmed */ -}} y", o, sizeof(o)), "xy");
    CHECK_STR(run(s, "{{ .Labels.severity }}|{{ .Labels.missing }}|", o, sizeof(o)), "page||");
    CHECK_STR(run(s, "{{ if eq .Labels.severity \"page\" }}P{{ else if .N }}N{{ else }}E{{ end }}", o, sizeof(o)), "P");
    CHECK_STR(run(s, "{{ if eq .Labels.severity \"x\" \"page\" }}multi{{ end }}", o, sizeof(o)), "multi");
    CHECK_STR(run(s, "{{ if .Empty }}y{{ else if gt .N 2.0 }}big{{ end }}", o, sizeof(o)), "big");
    CHECK_STR(run(s, "{{ range $i, $e := .List }}{{ $i }}={{ $e }} {{ end }}", o, sizeof(o)), "0=a 1=b 2=c ");
    CHECK_STR(run(s, "{{ range .Empty }}x{{ else }}none{{ end }}", o, sizeof(o)), "none");
    CHECK_STR(run(s, "{{ range $k, $v := .Labels }}{{ $k }}:{{ $v }};{{ end }}", o, sizeof(o)),
              "alertname:Disk<Full>;severity:page;");
    CHECK_STR(run(s, "{{ range .List }}{{ if eq . \"b\" }}{{ break }}{{ end }}{{ . }}{{ end }}", o, sizeof(o)), "a");
    CHECK_STR(run(s, "{{ range .List }}{{ if eq . \"b\" }}{{ continue }}{{ end }}{{ . }}{{ end }}", o, sizeof(o)), "ac");
    CHECK_STR(run(s, "{{ with .Labels }}{{ .severity }}{{ end }}{{ with .Empty }}x{{ else }}w{{ end }}", o, sizeof(o)), "pagew");
    CHECK_STR(run(s, "{{ $x := .Name }}{{ $x = toUpper $x }}{{ $x }}", o, sizeof(o)), "CAIRN");
    CHECK_STR(run(s, "{{ .Name | toUpper | printf \"<%s>\" }}", o, sizeof(o)), "<CAIRN>");
    CHECK_STR(run(s, "{{ printf \"%d %.1f %5s|%q %v\" (len .List) .N \"x\" .Name .List }}", o, sizeof(o)),
              "3 2.5     x|\"cairn\" [a b c]");
    CHECK_STR(run(s, "{{ index .List 1 }}{{ index .Labels \"severity\" }}{{ slice .Name 1 3 }}", o, sizeof(o)), "bpageai");
    CHECK_STR(run(s, "{{ and .Name .Empty }}|{{ or .Empty .Name }}|{{ not .N }}", o, sizeof(o)), "[]|cairn|false");
    CHECK_STR(run(s, "{{ define \"T\" }}[{{ . }}]{{ end }}{{ template \"T\" .Name }}{{ block \"B\" .N }}<{{ . }}>{{ end }}", o, sizeof(o)),
              "[cairn]<2.5>");
    CHECK_STR(run(s, "{{ print 1 2 \"a\" \"b\" 3 }}|{{ len \"abc\" }}|{{ urlquery \"a b&c\" }}|{{ html \"<b>\" }}", o, sizeof(o)),
              "1 2ab3|3|a+b%26c|&lt;b&gt;");
    CHECK_STR(run(s, "{{ `raw \\n` }}", o, sizeof(o)), "raw \\n");
    /* errors, with Go's words */
    CHECK_CONTAINS(run(s, "{{ if .N }}x", o, sizeof(o)), "unexpected EOF");
    CHECK_CONTAINS(run(s, "{{ nope .N }}", o, sizeof(o)), "function \"nope\" not defined");
    CHECK_CONTAINS(run(s, "{{ .N", o, sizeof(o)), "unclosed action");
    CHECK_CONTAINS(run(s, "{{ end }}", o, sizeof(o)), "unexpected {{end}}");
    CHECK_CONTAINS(run(s, "{{ .Name.Foo }}", o, sizeof(o)), "can't evaluate field Foo");
    CHECK_CONTAINS(run(s, "{{ template \"none\" }}", o, sizeof(o)), "no such template");
    CHECK_CONTAINS(run(s, "{{ break }}", o, sizeof(o)), "outside {{range}}");
    CHECK_CONTAINS(run(s, "x\n{{ $u }}", o, sizeof(o)), "t:2:");
    gt_set_free(&s);

    /* an HTML set escapes what actions print */
    s = gt_set_new(true);
    CHECK_STR(run(s, "<b>{{ .Labels.alertname }}</b>", o, sizeof(o)), "<b>Disk&lt;Full&gt;</b>");
    gt_set_free(&s);
}
