/* Linked with every object of src/core/ and nothing else (make's build/core-links):
 * the build fails if the core library reaches into a role. */
#include "core/common.h"

int main(void)
{
    return 0;
}
