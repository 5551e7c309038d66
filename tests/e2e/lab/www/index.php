<?php
// Lab front page: a plain 200.
header('Content-Type: text/plain');
echo "ok\n";
