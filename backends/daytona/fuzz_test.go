package daytona

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// FuzzCommandLogs feeds arbitrary command logs to the decoder exec polls with: a log read
// in two polls (a prefix, then the whole log as final) gives exactly the output of reading
// it once, the wrapper's report lines never reach stdout, and every error is Unavailable.
func FuzzCommandLogs(f *testing.F) {
	for _, s := range [][2]string{
		{"aGkK\nYnll\n", "ZXJyCg==\n"},
		{"!enoent\n", ""},
		{"aGk", "ZQ=="},            // partial last line
		{"not base64\n", ""},       // undecodable
		{" aGkK \r\n\n\naGkK", ""}, // whitespace
		{"!chdir\naGkK\n", "!notareport\n"},
	} {
		f.Add(s[0], s[1], uint16(3))
	}
	f.Fuzz(func(t *testing.T, stdout, stderr string, cut uint16) {
		once := &streams{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		errOnce := once.feed(&commandLogs{Stdout: stdout, Stderr: stderr}, true)
		twice := &streams{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		co, ce := min(int(cut), len(stdout)), min(int(cut), len(stderr))
		errTwice := twice.feed(&commandLogs{Stdout: stdout[:co], Stderr: stderr[:ce]}, false)
		if errTwice == nil {
			errTwice = twice.feed(&commandLogs{Stdout: stdout, Stderr: stderr}, true)
		}
		for _, err := range []error{errOnce, errTwice} {
			if err != nil && !errdefs.Is(err, errdefs.KindUnavailable) {
				t.Fatalf("error of kind %v: %v", errdefs.KindOf(err), err)
			}
		}
		if (errOnce == nil) != (errTwice == nil) {
			t.Fatalf("one read: %v; two reads: %v", errOnce, errTwice)
		}
		if errOnce != nil {
			return
		}
		for name, pair := range map[string][2]*bytes.Buffer{
			"stdout": {once.stdout.(*bytes.Buffer), twice.stdout.(*bytes.Buffer)},
			"stderr": {once.stderr.(*bytes.Buffer), twice.stderr.(*bytes.Buffer)},
		} {
			if !bytes.Equal(pair[0].Bytes(), pair[1].Bytes()) {
				t.Fatalf("%s differs: one read %q, two reads %q", name, pair[0], pair[1])
			}
		}
		if once.report != twice.report {
			t.Fatalf("report differs: %q vs %q", once.report, twice.report)
		}
		if once.outOff != len(stdout) || once.errOff != len(stderr) {
			t.Fatalf("final read left offsets %d/%d of %d/%d", once.outOff, once.errOff, len(stdout), len(stderr))
		}
	})
}

// answer is a RoundTripper that answers every request with one fixed response.
type answer struct {
	ctype string
	body  []byte
}

func (a answer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {a.ctype}},
		Body: io.NopCloser(bytes.NewReader(a.body)), Request: r}, nil
}

// FuzzDownload feeds arbitrary multipart answers to the toolbox file download. It never
// panics, writes no more than the answer held, and every error carries an errdefs kind: a
// broken answer from the provider is Unavailable, never an unclassified error (a 500).
func FuzzDownload(f *testing.F) {
	const ct = "multipart/form-data; boundary=XyZ"
	part := func(name, body string) string {
		return "--XyZ\r\nContent-Disposition: form-data; name=\"" + name + "\"; filename=\"f\"\r\n\r\n" + body + "\r\n"
	}
	for _, s := range [][2]string{
		{ct, part("file", "hello") + "--XyZ--\r\n"},
		{ct, part("error", `{"statusCode":404,"message":"no such file","code":"FILE_NOT_FOUND"}`) + "--XyZ--\r\n"},
		{ct, part("error", `{"statusCode":200}`) + "--XyZ--\r\n"},
		{ct, part("error", `not json`) + "--XyZ--\r\n"},
		{ct, part("other", "x") + "--XyZ--\r\n"},
		{ct, "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\ncut in the middle"},
		{ct, ""},
		{"application/json", `{"message":"not multipart"}`},
		{"multipart/form-data", part("file", "no boundary")},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		c := newClient("http://daytona.invalid/api", "tok", "", restapi.Policy{MaxAttempts: 1})
		c.rc.HTTP = &http.Client{Transport: answer{ctype, body}}
		tb := c.toolbox("http://proxy.invalid/toolbox", "sb1")
		var out bytes.Buffer
		err := tb.download(context.Background(), "/workspace/f", &out)
		if out.Len() > len(body) {
			t.Fatalf("wrote %d bytes from a %d byte answer", out.Len(), len(body))
		}
		if err != nil {
			if errdefs.KindOf(err) == errdefs.KindUnknown {
				t.Fatalf("unclassified error: %v", err)
			}
			if strings.Contains(err.Error(), "tok") {
				t.Fatalf("error shows the token: %v", err)
			}
		}
	})
}
