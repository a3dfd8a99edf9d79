package moattest_test

import (
	"testing"

	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/moattest"
)

func TestLocal(t *testing.T) {
	moattest.Run(t, func(t *testing.T) moattest.Target { return moattest.Local(t) })
}

func TestOverHTTP(t *testing.T) {
	moattest.Run(t, func(t *testing.T) moattest.Target {
		return moattest.OverHTTP(t, httpapi.Options{Tokens: []string{"suite-token"}})
	})
}
