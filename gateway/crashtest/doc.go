// Package crashtest holds the gateway's crash-safety test: the gateway runs as a
// separate OS process (this test binary re-executed) and is killed with SIGKILL at
// random points while a merchant drives authorizations, captures and credits at it;
// after each restart on the same store and token directory the merchant retries, and
// the test checks that every answer received is the stored one and nothing was done
// twice.
package crashtest
