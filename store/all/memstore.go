//go:build !moat_omit_memstore

package all

import _ "github.com/moatsh/moat/store/memstore" // registers its URL scheme
