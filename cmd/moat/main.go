// Command moat is the moat CLI; see internal/cli.
package main

import (
	"context"
	"os"

	_ "github.com/moatsh/moat/backends/all"
	"github.com/moatsh/moat/internal/cli"
	_ "github.com/moatsh/moat/store/all"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
