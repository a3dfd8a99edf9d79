//go:build !moat_omit_postgres

package all

import _ "github.com/moatsh/moat/store/postgres" // registers its URL scheme
