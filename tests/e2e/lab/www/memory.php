<?php $a = []; while (true) { $a[] = str_repeat('x', 2097152 - 64); }
