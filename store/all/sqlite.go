//go:build !moat_omit_sqlite

package all

import _ "github.com/moatsh/moat/store/sqlite" // registers its URL scheme
