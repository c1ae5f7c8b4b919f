#ifndef CAIRN_DEFAULT_STACK_H
#define CAIRN_DEFAULT_STACK_H
extern const char cairn_default_stack[];
#endif
