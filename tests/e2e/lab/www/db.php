<?php
// Lab: opens a mysqli connection to the lab MariaDB and holds it ?hold=N seconds (0..30); with
// ?table=DB.TABLE it also reads that table. On failure it answers like WordPress does: a 500 page
// "Error establishing a database connection", or "WordPress database error ..." in the log.
// With ?strict=1 it keeps PHP 8.1's default (errors throw mysqli_sql_exception), as most modern
// apps do: a failed connection is an uncaught exception, a PHP fatal error and a 500.
if (($_GET['strict'] ?? '') !== '1') {
    mysqli_report(MYSQLI_REPORT_OFF);
}
$hold = max(0, min(30, (int)($_GET['hold'] ?? 0)));
$sock = $_SERVER['LAB_MYSQL_SOCKET'] ?? '';
$db = mysqli_connect('localhost', 'lab', 'lab', '', 0, $sock);
if (!$db) {
    http_response_code(500);
    header('Content-Type: text/plain');
    echo "Error establishing a database connection\n";
    exit;
}
$table = (string)($_GET['table'] ?? '');
if ($table !== '' && preg_match('/^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$/', $table)) {
    $query = "SELECT * FROM $table WHERE 1 = 1 LIMIT 100";
    if (!mysqli_query($db, $query)) {
        error_log('WordPress database error ' . mysqli_error($db) . " for query $query made by require('wp-blog-header.php')");
        http_response_code(500);
        header('Content-Type: text/plain');
        echo "database error\n";
        exit;
    }
}
mysqli_query($db, 'SELECT 1');
sleep($hold);
mysqli_close($db);
header('Content-Type: text/plain');
echo "db ok\n";
