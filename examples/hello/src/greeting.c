#include "greeting.h"

const char *greeting(void)
{
    return "Hello from a ws workspace";
}
