package confkey

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/moatsh/moat/errdefs"
)

func decode(t *testing.T, in string, v any) error {
	t.Helper()
	return toml.NewDecoder(strings.NewReader(in)).DisallowUnknownFields().Decode(v)
}

func TestDuration(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for _, tc := range []struct {
		in    string
		want  time.Duration
		warns bool
	}{
		{`t = "60s"`, time.Minute, false},
		{`t = "1h30m"`, 90 * time.Minute, false},
		{`t = 60`, time.Minute, true}, // the deprecated bare number, in the old unit
		{`t = "0"`, 0, false},
		{``, 0, false},
	} {
		buf.Reset()
		var c struct {
			T Duration `toml:"t"`
		}
		if err := decode(t, tc.in, &c); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		got, err := c.T.Resolve(log, "prov", "t", time.Second)
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if warned := strings.Contains(buf.String(), "deprecated"); warned != tc.warns {
			t.Errorf("%s: warning %q", tc.in, buf.String())
		}
	}
	var c struct {
		T Duration `toml:"t"`
	}
	if err := decode(t, `t = "soon"`, &c); err == nil {
		t.Error("a non-duration was accepted")
	}
	if _, err := D(-time.Second).Resolve(nil, "prov", "t", time.Second); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("negative: %v", err)
	}
	if b, _ := json.Marshal(D(5 * time.Minute)); string(b) != `"5m0s"` {
		t.Errorf("json %s", b)
	}
}

func TestFold(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	old, canon := "k", ""
	if err := Fold(log, "prov", "api_key", "token", &old, &canon); err != nil || canon != "k" || old != "" {
		t.Fatalf("fold: %v %q %q", err, canon, old)
	}
	if n := strings.Count(buf.String(), "api_key is deprecated; use token"); n != 1 {
		t.Errorf("%d warnings naming the new key: %q", n, buf.String())
	}
	buf.Reset()
	if err := Fold(log, "prov", "api_key", "token", &old, &canon); err != nil || buf.Len() != 0 {
		t.Errorf("second fold: %v, %q", err, buf.String())
	}
	a, b := 3, 4
	if err := Fold(log, "prov", "max_retries", "max_attempts", &a, &b); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("both set: %v", err)
	}
}
