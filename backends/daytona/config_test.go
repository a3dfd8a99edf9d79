package daytona

import (
	"bytes"
	"strings"
	"testing"

	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
)

// TestDeprecatedAPIKey checks that api_key, the old name of token, still works with one
// warning, and that it cannot disagree with token.
func TestDeprecatedAPIKey(t *testing.T) {
	// The factory warns on the backend's logger (backend.Config.Logger).
	var logs bytes.Buffer
	open := func(section string) (*Backend, error) {
		b, l, err := providertest.OpenTOML(Name, section)
		logs.Reset()
		if l != nil {
			logs.Write(l.Bytes())
		}
		if err != nil {
			return nil, err
		}
		return b.(*Backend), nil
	}
	b, err := open(`token = "k1"`)
	if err != nil || b.c.token != "k1" || logs.Len() != 0 {
		t.Fatalf("token: %v, logs %q", err, logs.String())
	}
	b, err = open(`api_key = "k2"`)
	if err != nil || b.c.token != "k2" {
		t.Fatalf("api_key: %v", err)
	}
	if strings.Count(logs.String(), "api_key is deprecated; use token") != 1 {
		t.Errorf("want one deprecation warning, got %q", logs.String())
	}
	if _, err := open("token = \"a\"\napi_key = \"b\""); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("both set: %v", err)
	}
}
