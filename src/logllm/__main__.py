import sys

from logllm.cli import main

sys.exit(main())
