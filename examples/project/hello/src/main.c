#include <stdio.h>

#include "hello.h"

int main(void)
{
    printf("%s, %s!\n", greeting(), name());
    printf("%s\n", farewell());
    return 0;
}
