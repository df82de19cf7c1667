"""Staff, staff–customer relations (WeCom follow_user), owners and group memberships."""
