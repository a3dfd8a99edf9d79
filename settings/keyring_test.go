package settings

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	_ "github.com/moatsh/moat/store/sqlite"
)

// rawDB returns every byte of a SQLite database's files (the main file and its WAL).
func rawDB(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	files, _ := filepath.Glob(filepath.Join(dir, "moat.db*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if len(all) == 0 {
		t.Fatal("no database bytes")
	}
	return all
}

func TestSecretsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kr := NewKeyring(filepath.Join(dir, "settings.key"))
	const token = "provider-token-0123456789abcdef"
	if err := Save(ctx, st, kr, "prov", map[string]string{"token": token, "team": "t1"}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(rawDB(t, dir), []byte(token)) {
		t.Fatal("the token is in the database in clear")
	}
	fi, err := os.Stat(kr.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	// Another process with the same key file reads it back.
	got, err := Get(ctx, st, NewKeyring(kr.Path()), "prov")
	if err != nil || got["token"] != token {
		t.Fatalf("get = %v, %v", got, err)
	}
	// Without the key file the database alone reveals nothing, and says why.
	if _, err := Get(ctx, st, NewKeyring(filepath.Join(dir, "other.key")), "prov"); !errdefs.Is(err, errdefs.KindFailedPrecondition) || strings.Contains(err.Error(), token) {
		t.Fatalf("without the key: %v", err)
	}
	// A value moved to another backend's key does not open.
	raw, _ := st.GetSetting(ctx, key("prov"))
	if err := st.PutSetting(ctx, key("other"), raw); err != nil {
		t.Fatal(err)
	}
	if _, err := Get(ctx, st, kr, "other"); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("a value moved between keys opened: %v", err)
	}
	_ = st.DeleteSetting(ctx, key("other"))

	// Plaintext from before encryption still reads, and is sealed on its next write.
	if err := st.PutSetting(ctx, key("legacy"), []byte(`{"token":"legacy-token-value"}`)); err != nil {
		t.Fatal(err)
	}
	all, err := Load(ctx, st, kr)
	if err != nil || all["legacy"]["token"] != "legacy-token-value" || all["prov"]["token"] != token {
		t.Fatalf("load = %v, %v", all, err)
	}

	// Rotation re-encrypts everything with a new key and drops the old one.
	before, _ := os.ReadFile(kr.Path())
	if err := Rotate(ctx, st, kr); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(kr.Path())
	oldID := strings.Fields(string(before[bytes.LastIndex(before[:len(before)-1], []byte("\n"))+1:]))[2]
	if bytes.Contains(after, []byte(" "+oldID+" ")) || strings.Count(string(after), "moat-settings-key") != 1 {
		t.Fatalf("key file after rotation still holds the old key:\n%s", after)
	}
	all, err = Load(ctx, st, NewKeyring(kr.Path()))
	if err != nil || all["legacy"]["token"] != "legacy-token-value" || all["prov"]["token"] != token {
		t.Fatalf("after rotation: %v, %v", all, err)
	}
	raw, _ = st.GetSetting(ctx, key("legacy"))
	if !bytes.HasPrefix(raw, []byte(sealedPrefix)) {
		t.Fatalf("legacy value not sealed by rotation: %q", raw)
	}

	// A key file others can read is refused.
	if err := os.Chmod(kr.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Get(ctx, st, NewKeyring(kr.Path()), "prov"); !errdefs.Is(err, errdefs.KindFailedPrecondition) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file: %v", err)
	}
}
