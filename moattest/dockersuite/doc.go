// Package dockersuite answers "does the manager suite pass on real Docker, in-process and
// over HTTP?": it only holds tests, kept apart from moattest so that the Docker SDK stays
// out of the packages that import moattest.
package dockersuite
