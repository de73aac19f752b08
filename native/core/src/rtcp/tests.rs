// RTCP tests: added in the next commit.
