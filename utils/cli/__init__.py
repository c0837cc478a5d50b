"""The command line: argv and YAML, path checks, the options cache, main_train's parser, and every option range-checked
before weights load."""
