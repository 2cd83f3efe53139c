"""Analysis of psychinterp response tables."""
