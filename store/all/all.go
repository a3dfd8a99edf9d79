// Package all answers "which stores does this binary have?": importing it registers the
// sqlite:, postgres:// and mem: stores. Build with -tags moat_omit_postgres (etc.) to leave
// one out.
package all
