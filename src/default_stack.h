/* default_stack.h - the stack `cairn up` runs without -c (and `cairn config default`
 * prints): the whole request path and every observability role that exists, on the
 * ports fixed in ARCHITECTURE.md. Read by src/cairn.c only. */
#ifndef CAIRN_DEFAULT_STACK_H
#define CAIRN_DEFAULT_STACK_H
extern const char cairn_default_stack[];
#endif
