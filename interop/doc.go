// Package interop holds integration tests that check setpay against software nobody
// here wrote (OpenSSL's cms, verify and PKCS#11 engine; OpenSC's pkcs11-tool) and
// against a hostile gRPC client, on a whole system built by system on
// loopback. It has no API: everything is in _test.go files. Tests that need a tool
// skip when its binary is absent.
package interop
