package vercel

import (
	"bytes"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
)

// FuzzCommandStream feeds arbitrary bytes to the NDJSON command-log parser, as a hostile or
// broken Vercel API would. It never panics, every error has an errdefs kind (never an
// unclassified 500 upstream), a success needs a final command record, and the output it
// writes is bounded by what it read (a JSON string decodes to at most 3 bytes per input
// byte: an invalid byte becomes U+FFFD). Keys match case-insensitively, as encoding/json does.
func FuzzCommandStream(f *testing.F) {
	for _, s := range []string{
		`{"command":{"id":"c1"}}` + "\n" + `{"stream":"stdout","data":"hi\n"}` + "\n" + `{"stream":"stderr","data":"e"}` + "\n" + `{"command":{"id":"c1","exitCode":0}}` + "\n",
		`{"command":{"id":"c1"}}` + "\n" + `{"command":{"id":"c1","exitCode":-1}}`,
		`{"command":{"id":"c1"}}` + "\n" + `{"stream":"error","data":{"code":"sandbox_stopped","message":"stopped"}}` + "\n",
		`{"command":{"id":"c1"}}` + "\n" + `{"stream":"error","data":"not an object"}` + "\n",
		`{"command":{"id":"c1"}}` + "\n" + `{"stream":"stdout","data":123}` + "\n",
		`{"command":{"id":"c1"}}` + "\n" + `{"stream":"stdout","data":"\ud800\u0000\xff"}` + "\n",
		`{"command":{"id":"c1"}}` + "\n" + `{"command":{"id":"c1","exitCode":99999999999999999999}}`,
		`{"command":{"id":"c1"}}` + "\n\n   \n" + `{"stream":"other"}` + "\n",
		"not json\n",
		`{"command":{"id":"c1"}}` + "\n" + `{"command":{"id":"c1","exitCo`,
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var stdout, stderr bytes.Buffer
		idCh := make(chan string, 1)
		code, err := readCommandStream(bytes.NewReader(data), idCh, &stdout, &stderr)
		if err != nil {
			if errdefs.KindOf(err) == errdefs.KindUnknown {
				t.Fatalf("error without a kind: %v", err)
			}
		} else if !strings.Contains(strings.ToLower(string(data)), "exitcode") {
			t.Fatalf("exit code %d from a stream without a final record", code)
		}
		if n := stdout.Len() + stderr.Len(); n > 3*len(data) {
			t.Fatalf("wrote %d bytes of output from %d bytes of stream", n, len(data))
		}
		select {
		case id := <-idCh:
			if !strings.Contains(strings.ToLower(string(data)), "command") {
				t.Fatalf("command id %q from a stream without a command record", id)
			}
		default:
		}
	})
}
