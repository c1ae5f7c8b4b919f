/* main.c - runs every registered unit test (or those whose name contains argv[1]). */
#include "test.h"

#include <stdarg.h>
#include <stdlib.h>

static struct test_case *head, **tail = &head;
static int case_failures;
static const char *current;

void test_register(struct test_case *tc)
{
    *tail = tc;
    tail = &tc->next;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s (%s:%d): ", current, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    case_failures++;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (struct test_case *tc = head; tc; tc = tc->next) {
        if (argc > 1 && !strstr(tc->name, argv[1]))
            continue;
        current = tc->name;
        case_failures = 0;
        tc->fn();
        if (case_failures)
            failed++;
        else
            passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
