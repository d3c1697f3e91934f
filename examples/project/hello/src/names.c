#include <greet.h>

#include "hello.h"

const char *name(void)
{
    return GREET_WHO;
}
