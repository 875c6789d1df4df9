-- examples/shop.sql: a small shop, the example database of examples/README.md.
-- Build it with:  build/duckling sql examples/shop.duckdb < examples/shop.sql
-- (or with DuckDB's own shell: duckdb examples/shop.duckdb < examples/shop.sql).
-- The orders are generated from range() with fixed arithmetic, so every build is identical.

DROP TABLE IF EXISTS reviews;
DROP TABLE IF EXISTS order_items;
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS products;
DROP TABLE IF EXISTS customers;

CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    city VARCHAR NOT NULL,
    country VARCHAR NOT NULL,
    signed_up DATE NOT NULL
);

INSERT INTO customers VALUES
    (1, 'Ada Martin', 'Paris', 'France', DATE '2023-01-14'),
    (2, 'Bruno Keller', 'Zurich', 'Switzerland', DATE '2023-02-03'),
    (3, 'Chloé Dubois', 'Lyon', 'France', DATE '2023-03-22'),
    (4, 'Dmitri Volkov', 'Berlin', 'Germany', DATE '2023-04-09'),
    (5, 'Elena Rossi', 'Milan', 'Italy', DATE '2023-05-17'),
    (6, 'Farid Haddad', 'Marseille', 'France', DATE '2023-06-01'),
    (7, 'Greta Lindqvist', 'Stockholm', 'Sweden', DATE '2023-07-12'),
    (8, 'Hugo Almeida', 'Lisbon', 'Portugal', DATE '2023-08-30'),
    (9, 'Ines García', 'Madrid', 'Spain', DATE '2023-09-05'),
    (10, 'Jonas Becker', 'Hamburg', 'Germany', DATE '2023-10-19'),
    (11, 'Katarzyna Nowak', 'Warsaw', 'Poland', DATE '2023-11-02'),
    (12, 'Luca Bianchi', 'Rome', 'Italy', DATE '2024-01-08');

CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    price DECIMAL(8,2) NOT NULL
);

INSERT INTO products VALUES
    (1, 'Espresso beans 1kg', 'coffee', 24.90),
    (2, 'Filter coffee 500g', 'coffee', 11.50),
    (3, 'Decaf beans 500g', 'coffee', 13.20),
    (4, 'Green tea 100g', 'tea', 8.40),
    (5, 'Earl Grey 250g', 'tea', 9.90),
    (6, 'Ceramic mug', 'accessories', 12.00),
    (7, 'Hand grinder', 'accessories', 45.00),
    (8, 'Pour-over kettle', 'accessories', 59.00),
    (9, 'Milk frother', 'accessories', 29.50),
    (10, 'Dark chocolate 200g', 'snacks', 4.80);

CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    ordered_at DATE NOT NULL,
    status VARCHAR NOT NULL  -- 'paid', 'shipped', 'refunded' or 'open'
);

INSERT INTO orders
SELECT i + 1,
       (i * 7) % 12 + 1,
       DATE '2024-01-01' + CAST((i * 37) % 365 AS INTEGER),
       CASE WHEN i % 11 = 0 THEN 'refunded' WHEN i % 5 = 0 THEN 'open' WHEN i % 3 = 0 THEN 'shipped' ELSE 'paid' END
FROM range(120) t(i);

CREATE TABLE order_items (
    order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

INSERT INTO order_items
SELECT id, (id * 3) % 10 + 1, id % 3 + 1 FROM orders
UNION ALL  -- every fourth order has a second, different product
SELECT id, (id * 3 + 7) % 10 + 1, 1 FROM orders WHERE id % 4 = 0;

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    product_id INTEGER NOT NULL REFERENCES products(id),
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
    review VARCHAR NOT NULL
);

INSERT INTO reviews VALUES
    (1, 1, 1, 5, 'Rich and chocolatey, the best espresso I have had at home.'),
    (2, 1, 4, 4, 'Very good beans, a little oily for my grinder.'),
    (3, 2, 2, 3, 'Fine for the office, nothing special.'),
    (4, 3, 5, 2, 'Tastes flat, I would not buy it again.'),
    (5, 4, 7, 5, 'Fresh and grassy, exactly what I wanted.'),
    (6, 5, 3, 4, 'Lovely bergamot, the tin keeps it fresh.'),
    (7, 6, 6, 1, 'Arrived broken and support never answered.'),
    (8, 7, 8, 5, 'Solid build, consistent grind, worth the price.'),
    (9, 8, 9, 4, 'Pours precisely; the handle gets warm.'),
    (10, 9, 10, 2, 'Stopped working after two weeks.'),
    (11, 10, 11, 5, 'Not too sweet, perfect with coffee.'),
    (12, 1, 12, 4, 'Great crema, fast delivery.');


