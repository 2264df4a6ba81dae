"""The Lambda's callers: each module translates one kind of event into an engine run and back."""
