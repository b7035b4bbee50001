"""Tests of milpverify.bounds (interval and symbolic bound tightening)."""
