// tally: counts the words read on stdin and prints "COUNT WORD" lines, most
// frequent first (ties by word), like `tr -s ' ' '\n' | sort | uniq -c | sort -rn`.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct word {
	char text[64];
	int n;
};

static int by_count(const void *a, const void *b)
{
	const struct word *x = a, *y = b;

	return x->n != y->n ? y->n - x->n : strcmp(x->text, y->text);
}

int main(void)
{
	static struct word words[1024];
	char buf[64];
	int nwords = 0, i;

	while (scanf("%63s", buf) == 1) {
		for (i = 0; i < nwords && strcmp(words[i].text, buf); i++)
			;
		if (i == nwords) {
			if (nwords == 1024)
				continue;
			strcpy(words[nwords++].text, buf);
		}
		words[i].n++;
	}
	qsort(words, nwords, sizeof(words[0]), by_count);
	for (i = 0; i < nwords; i++)
		printf("%d %s\n", words[i].n, words[i].text);
	return 0;
}
